"""Bearer tokens: `name:scope:secret,...` or a JSON list, scopes read / write."""

from __future__ import annotations

import hmac
import ipaddress
import json
from dataclasses import dataclass

READ, WRITE = "read", "write"
OPEN_ACTOR = "api"  # the audit actor when no token is configured (loopback only)


class TokenConfigError(ValueError):
    """SYNCBRIDGE_API_TOKENS is malformed; the message is one line (never the secret)."""


@dataclass(frozen=True, slots=True)
class Token:
    name: str
    scope: str
    secret: str

    def allows(self, scope: str) -> bool:
        return self.scope == WRITE or scope == READ


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    scope: str


def parse_tokens(text: str | None) -> list[Token]:
    if text is None or not text.strip():
        return []
    raw: list[tuple[object, object, object]] = []
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            items = json.loads(stripped)
        except ValueError:
            raise TokenConfigError("bad setting SYNCBRIDGE_API_TOKENS: not valid JSON") from None
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise TokenConfigError("bad setting SYNCBRIDGE_API_TOKENS: expected a JSON list "
                                   "of {name, scope, secret} objects")
        raw = [(i.get("name"), i.get("scope"), i.get("secret")) for i in items]
    else:
        for n, part in enumerate(stripped.split(","), 1):
            fields = part.strip().split(":", 2)
            if len(fields) != 3:
                raise TokenConfigError(f"bad setting SYNCBRIDGE_API_TOKENS: token {n} is "
                                       "not name:scope:secret")
            raw.append((fields[0], fields[1], fields[2]))
    tokens: list[Token] = []
    for n, (name, scope, secret) in enumerate(raw, 1):
        if not isinstance(name, str) or not name or len(name) > 64 or not name.isprintable():
            raise TokenConfigError(f"bad setting SYNCBRIDGE_API_TOKENS: token {n} needs a "
                                   "printable name of 1 to 64 characters")
        if scope not in (READ, WRITE):
            raise TokenConfigError(f"bad setting SYNCBRIDGE_API_TOKENS: token {name!r} scope "
                                   "must be read or write")
        if not isinstance(secret, str) or len(secret) < 16 or not secret.isascii() \
                or not secret.isprintable() or " " in secret:
            raise TokenConfigError(f"bad setting SYNCBRIDGE_API_TOKENS: token {name!r} needs a "
                                   "secret of at least 16 printable ASCII characters")
        tokens.append(Token(name, scope, secret))
    if len({t.name for t in tokens}) != len(tokens):
        raise TokenConfigError("bad setting SYNCBRIDGE_API_TOKENS: token names must differ")
    return tokens


def find_token(tokens: list[Token], secret: str) -> Token | None:
    """The token with this secret; every token is compared (in constant time each)."""
    given = secret.encode("utf-8", "surrogateescape")
    found = None
    for token in tokens:
        if hmac.compare_digest(token.secret.encode(), given):
            found = token
    return found


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
