"""Idempotency-Key (IETF httpapi draft): a POST with a key is executed once.

The key's row (scope = the token's name, key) is inserted first, as `in_progress`; the
primary key makes a concurrent request with the same key fail to insert, and it is
answered 409. When the first request's response is ready it is stored in the row; a
repeat with the same request fingerprint (method, path, query, body) gets it back, a
different one gets 422. Rows expire after SYNCBRIDGE_API_IDEMPOTENCY_TTL_SECONDS; an
expired row is replaced by the next request with its key. A response the client cannot
be held to (5xx, 401, 403) is not stored: the row is removed, and a retry runs anew.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
from sqlalchemy import Column, Double, Integer, MetaData, String, Table, Text, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from core import clock
from core.api.problems import problem_response
from core.db import Database

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

idempotency_t = Table(
    "sync_api_idempotency", MetaData(),
    Column("scope", String(128), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("status_code", Integer),
    Column("headers", Text),
    Column("body", Text),
    Column("created_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False),
)

IN_PROGRESS, DONE = "in_progress", "done"
_REPLAYED_HEADERS = (b"content-type", b"location")
_NOT_STORED = (401, 403)


@dataclass(slots=True)
class Stored:
    status_code: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class IdempotencyStore:
    def __init__(self, db: Database, ttl_seconds: float) -> None:
        self.db = db
        self.ttl = ttl_seconds
        self._next_purge = 0.0

    def begin(self, scope: str, key: str, fingerprint: str) -> tuple[str, Stored | None]:
        """'new' (this request runs), 'replay' (with the stored response), 'mismatch' or
        'in_progress'."""
        t = idempotency_t.c
        now = clock.now()
        with self.db.write() as conn:
            conn.execute(delete(idempotency_t).where(t.scope == scope, t.key == key,
                                                     t.expires_at < now))
            # The dialect's INSERT, for ON CONFLICT DO NOTHING.
            insert = (postgresql.insert(idempotency_t) if self.db.is_postgres
                      else sqlite.insert(idempotency_t))
            inserted = conn.execute(
                insert.values(
                    scope=scope, key=key, fingerprint=fingerprint, state=IN_PROGRESS,
                    created_at=now, expires_at=now + self.ttl,
                ).on_conflict_do_nothing().returning(idempotency_t.c.key)
            ).first()
            if inserted is not None:
                return "new", None
            row = conn.execute(select(idempotency_t).where(t.scope == scope, t.key == key)
                               ).first()
        if row is None:  # expired and removed by another request in between: rare
            return "in_progress", None
        if row.fingerprint != fingerprint:
            return "mismatch", None
        if row.state != DONE:
            return "in_progress", None
        headers = [(k.encode("latin-1"), v.encode("latin-1"))
                   for k, v in json.loads(row.headers or "[]")]
        return "replay", Stored(int(row.status_code), headers, (row.body or "").encode())

    def finish(self, scope: str, key: str, stored: Stored) -> None:
        t = idempotency_t.c
        headers = json.dumps([(k.decode("latin-1"), v.decode("latin-1"))
                              for k, v in stored.headers if k.lower() in _REPLAYED_HEADERS])
        with self.db.write() as conn:
            conn.execute(idempotency_t.update().where(t.scope == scope, t.key == key).values(
                state=DONE, status_code=stored.status_code, headers=headers,
                body=stored.body.decode("utf-8", "replace")))

    def abandon(self, scope: str, key: str) -> None:
        t = idempotency_t.c
        with self.db.write() as conn:
            conn.execute(delete(idempotency_t).where(t.scope == scope, t.key == key,
                                                     t.state == IN_PROGRESS))

    def purge_expired(self) -> int:
        """Remove expired keys; cheap to call often (at most once a minute does work)."""
        if time.monotonic() < self._next_purge:
            return 0
        self._next_purge = time.monotonic() + 60
        with self.db.write() as conn:
            return int(conn.execute(delete(idempotency_t).where(
                idempotency_t.c.expires_at < clock.now())).rowcount or 0)


def fingerprint(method: str, path: str, query: bytes, body: bytes) -> str:
    h = hashlib.sha256()
    for part in (method.encode(), path.encode("utf-8", "surrogateescape"), query, body):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


def parse_key(value: bytes) -> str | None:
    """The key from the header: an sf-string (`"abc"`) or bare; None when unusable."""
    try:
        text = value.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    if not 1 <= len(text) <= 255 or not all(" " <= ch <= "~" for ch in text):
        return None
    return text


class RequestGuard:
    """ASGI middleware: the body size limit for every request, and Idempotency-Key for
    POSTs. `principal_of(headers)` names the caller (None: not authenticated, so the
    request runs without idempotency and the route answers 401)."""

    def __init__(self, app: ASGIApp, *, max_body: int,
                 store: Callable[[], IdempotencyStore | None],
                 principal_of: Callable[[dict[bytes, bytes]], str | None]) -> None:
        self.app = app
        self.max_body = max_body
        self.store = store
        self.principal_of = principal_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await self._too_large(scope, receive, send)
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay_receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        raw_key = headers.get(b"idempotency-key")
        store = self.store() if raw_key is not None else None
        if raw_key is None or store is None:
            await self.app(scope, replay_receive, send)
            return
        key = parse_key(raw_key)
        if key is None:
            await problem_response(
                400, "Idempotency-Key must be 1 to 255 printable ASCII characters",
                slug="bad-idempotency-key")(scope, replay_receive, send)
            return
        principal = self.principal_of(headers)
        if principal is None:
            await self.app(scope, replay_receive, send)
            return
        fp = fingerprint(scope["method"], scope["path"], scope.get("query_string", b""), body)
        await anyio.to_thread.run_sync(store.purge_expired)
        verdict, stored = await anyio.to_thread.run_sync(store.begin, principal, key, fp)
        if verdict == "mismatch":
            await problem_response(
                422, "this Idempotency-Key was already used with a different request",
                slug="idempotency-key-reused")(scope, replay_receive, send)
            return
        if verdict == "in_progress":
            await problem_response(
                409, "a request with this Idempotency-Key is still in progress",
                slug="request-in-progress")(scope, replay_receive, send)
            return
        if verdict == "replay":
            assert stored is not None
            await send({"type": "http.response.start", "status": stored.status_code,
                        "headers": [*stored.headers,
                                    (b"content-length", str(len(stored.body)).encode()),
                                    (b"idempotent-replayed", b"true")]})
            await send({"type": "http.response.body", "body": stored.body})
            return
        captured = Stored(0, [], b"")
        parts: list[bytes] = []
        held: list[Message] = []

        async def capture(message: Message) -> None:
            # Held back until the answer is stored: a client that repeats the request the
            # moment it reads the answer must find it stored, not "in progress".
            if message["type"] == "http.response.start":
                captured.status_code = int(message["status"])
                captured.headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))
            held.append(message)

        try:
            await self.app(scope, replay_receive, capture)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(store.abandon, principal, key)
            raise
        captured.body = b"".join(parts)
        if captured.status_code >= 500 or captured.status_code in _NOT_STORED \
                or captured.status_code == 0:
            await anyio.to_thread.run_sync(store.abandon, principal, key)
        else:
            await anyio.to_thread.run_sync(store.finish, principal, key, captured)
        for message in held:
            await send(message)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await problem_response(
            413, f"the request body is larger than {self.max_body} bytes "
                 "(SYNCBRIDGE_API_MAX_BODY_BYTES)", slug="body-too-large",
            headers={"Connection": "close"})(scope, receive, send)
