"""Upstreams: where each named upstream is (URL, timeout, headers, from the app and the
settings), and an httpx client per upstream for a worker. In demo mode only, an upstream
without a URL is answered by the in-process mock; otherwise the worker refuses to start.

Where an upstream's URL comes from, first found wins:
  1. SYNCBRIDGE_UPSTREAMS (JSON, settings) {"<name>": {"url": ...}}
  2. for `crm` and `billing`: SYNCBRIDGE_CRM_URL / SYNCBRIDGE_BILLING_URL (settings)
  3. the environment variable SYNCBRIDGE_UPSTREAM_<NAME>_URL
  4. the environment variable the app names (`registry.upstream(name, url_env=...)`)
  5. the app's `url=`
Timeout: SYNCBRIDGE_UPSTREAMS, else the app's, else SYNCBRIDGE_HTTP_TIMEOUT_SECONDS. Headers:
the app's, updated by SYNCBRIDGE_UPSTREAMS'; "${VAR}" in a value reads the environment.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import httpx

from core.config import Settings, SettingsError
from core.integrations.mock import MockUpstream

if TYPE_CHECKING:
    from core.handlers import Registry, Upstream

_default_mock: MockUpstream | None = None

# httpcore's connection pool does work proportional to its connections squared on every
# request it starts or finishes (each idle connection recounts every connection, and every
# connection's socket is polled for a server-side close). A worker running hundreds of jobs
# at once therefore gets several clients per upstream, each for at most this many jobs at a
# time (`pool_shards`), instead of one pool of hundreds of connections.
JOBS_PER_POOL = 8


def pool_shards(concurrency: int) -> int:
    """How many clients per upstream a worker running `concurrency` jobs at once uses."""
    return max(1, math.ceil(concurrency / JOBS_PER_POOL))


def pool_limits(jobs: int) -> httpx.Limits:
    """Connection limits of one client shared by at most `jobs` jobs at a time: two
    connections per job (at least 10), all of them kept alive (closing idle ones above a
    lower keep-alive limit only made the next request open a new connection)."""
    size = max(10, jobs * 2)
    return httpx.Limits(max_connections=size, max_keepalive_connections=size)

# Set by the worker in each job's task: (correlation id, attempt number). Every request made
# inside the task carries them, so upstreams can trace and de-duplicate.
job_headers_var: ContextVar[tuple[str, int] | None] = ContextVar("job_headers", default=None)


async def _add_job_headers(request: httpx.Request) -> None:
    current = job_headers_var.get()
    if current is not None:
        request.headers["X-Correlation-ID"] = current[0]
        request.headers["X-SyncBridge-Attempt"] = str(current[1])


class _NoCookies(httpx.Cookies):
    """The upstreams are APIs, not browsers: keep no cookie jar. Parsing every response for
    cookies was a sixth of the customer job's CPU (profile in bench/README.md)."""

    def extract_cookies(self, response: httpx.Response) -> None:
        pass

    def set_cookie_header(self, request: httpx.Request) -> None:
        pass


class _Client(httpx.AsyncClient):
    _none = _NoCookies()
    upstream_name: str | None = None  # errors of its requests name it (SyncError.upstream)

    @property
    def cookies(self) -> httpx.Cookies:
        return self._none

    @cookies.setter
    def cookies(self, value: object) -> None:
        pass


def default_mock() -> MockUpstream:
    global _default_mock
    if _default_mock is None:
        _default_mock = MockUpstream()
    return _default_mock


class UpstreamConfigError(SettingsError):
    """An upstream a worker needs is not usable as configured (one line naming it)."""


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class ResolvedUpstream:
    name: str
    url: str | None  # None: no URL (the mock in demo mode, else a problem)
    url_from: str  # where the URL came from, for `syncbridge check`
    timeout: float
    headers: dict[str, str] = field(default_factory=dict)  # as configured, "${VAR}" unexpanded

    def expanded_headers(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """The headers with "${VAR}" read from the environment (UpstreamConfigError when a
        variable is not set)."""
        env = os.environ if environ is None else environ
        out: dict[str, str] = {}
        for key, value in self.headers.items():
            def sub(m: re.Match[str], key: str = key) -> str:
                if m.group(1) not in env:
                    raise UpstreamConfigError(
                        f"upstream {self.name!r}: header {key} needs ${{{m.group(1)}}}, "
                        "which is not set")
                return env[m.group(1)]

            out[key] = _VAR.sub(sub, value)
        return out

    def display_url(self) -> str:
        return mask_url(self.url) if self.url else "(none)"

    def display_headers(self) -> dict[str, str]:
        """Header names with their values masked (a "${VAR}" reference is shown as such)."""
        return {k: (" ".join(f"${{{v}}}" for v in _VAR.findall(value)) or "***")
                for k, value in self.headers.items()}


def mask_url(url: str) -> str:
    """The URL with any user info (user:password@) and query values hidden."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "&".join(f"{kv.split('=', 1)[0]}=***" if "=" in kv else kv
                     for kv in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def env_var_for(name: str) -> str:
    return f"SYNCBRIDGE_UPSTREAM_{name.upper()}_URL"


def resolve_upstream(up: Upstream, settings: Settings,
                     environ: Mapping[str, str] | None = None) -> ResolvedUpstream:
    env = os.environ if environ is None else environ
    conf = settings.upstreams.get(up.name)
    url, url_from = None, ""
    builtin = {"crm": ("crm_url", "SYNCBRIDGE_CRM_URL"),
               "billing": ("billing_url", "SYNCBRIDGE_BILLING_URL")}.get(up.name)
    if conf is not None and conf.url:
        url, url_from = conf.url, "SYNCBRIDGE_UPSTREAMS"
    elif builtin is not None and getattr(settings, builtin[0]):
        url, url_from = getattr(settings, builtin[0]), builtin[1]
    elif env.get(env_var_for(up.name)):
        url, url_from = env[env_var_for(up.name)], env_var_for(up.name)
    elif up.url_env and env.get(up.url_env):
        url, url_from = env[up.url_env], up.url_env
    elif up.url:
        url, url_from = up.url, "the app"
    if url is not None:
        if not url.startswith(("http://", "https://")):
            raise UpstreamConfigError(f"upstream {up.name!r}: {url_from} is not an http:// or "
                                      "https:// URL")
        url = url.rstrip("/")
    timeout = settings.http_timeout_seconds
    if conf is not None and conf.timeout is not None:
        timeout = conf.timeout
    elif up.timeout is not None:
        timeout = up.timeout
    headers = dict(up.headers)
    if conf is not None:
        headers.update(conf.headers)
    return ResolvedUpstream(up.name, url, url_from, timeout, headers)


def where_to_set(name: str, up: Upstream | None = None) -> str:
    builtin = {"crm": "SYNCBRIDGE_CRM_URL", "billing": "SYNCBRIDGE_BILLING_URL"}.get(name)
    options = [builtin or env_var_for(name)]
    if up is not None and up.url_env:
        options.append(up.url_env)
    return " or ".join(options)


def resolve_upstreams(registry: Registry, settings: Settings,
                      environ: Mapping[str, str] | None = None) -> dict[str, ResolvedUpstream]:
    """Every upstream the registry's job types call, resolved; raises UpstreamConfigError
    (one line naming the upstream) when one has no URL outside demo mode, or a header needs
    an environment variable that is not set."""
    declared = registry.upstreams()
    needed = sorted({n for spec in registry.specs() for n in spec.upstreams})
    out: dict[str, ResolvedUpstream] = {}
    for name in needed:
        resolved = resolve_upstream(declared[name], settings, environ)
        if resolved.url is None and not settings.demo:
            users = [s.name for s in registry.specs() if name in s.upstreams]
            raise UpstreamConfigError(
                f"upstream {name!r} (used by {', '.join(users)}) has no URL: set "
                f"{where_to_set(name, declared[name])} (or run in demo mode, --demo)")
        resolved.expanded_headers(environ)
        out[name] = resolved
    return out


def make_upstream_clients(upstreams: Mapping[str, ResolvedUpstream], settings: Settings,
                          mock: MockUpstream | None = None, *, jobs: int | None = None
                          ) -> dict[str, httpx.AsyncClient]:
    """One client per upstream, sized for `jobs` jobs at a time (default: the settings'
    concurrency); an upstream without a URL (demo mode only) gets the mock."""
    limits = pool_limits(settings.concurrency if jobs is None else jobs)
    hooks = {"request": [_add_job_headers]}
    clients: dict[str, httpx.AsyncClient] = {}
    for name, up in upstreams.items():
        timeout = httpx.Timeout(up.timeout)
        headers = up.expanded_headers()
        if up.url:
            clients[name] = _Client(base_url=up.url, timeout=timeout, limits=limits,
                                    headers=headers, event_hooks=hooks)
        elif settings.demo:
            transport = (mock or default_mock()).transport()
            clients[name] = _Client(base_url=f"http://mock/{name}", transport=transport,
                                    timeout=timeout, headers=headers, event_hooks=hooks)
        else:
            raise UpstreamConfigError(f"upstream {name!r} has no URL: set {where_to_set(name)}")
        # Errors of its requests name it (SyncError.upstream): upstream protection updates
        # the breaker and pause of the right upstream.
        clients[name].upstream_name = name  # type: ignore[attr-defined]
    return clients


def make_clients(settings: Settings, mock: MockUpstream | None = None
                 ) -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
    """The demo's CRM and Billing clients (kept for scripts; the worker uses
    make_upstream_clients)."""
    timeout = httpx.Timeout(settings.http_timeout_seconds)
    limits = pool_limits(settings.concurrency)

    hooks = {"request": [_add_job_headers]}

    def one(url: str | None, prefix: str) -> httpx.AsyncClient:
        if url:
            client = _Client(base_url=url, timeout=timeout, limits=limits, event_hooks=hooks)
        else:
            if not settings.demo:
                raise UpstreamConfigError(f"{prefix[1:]} has no URL outside demo mode")
            transport = (mock or default_mock()).transport()
            client = _Client(base_url=f"http://mock{prefix}", transport=transport,
                             timeout=timeout, event_hooks=hooks)
        client.upstream_name = prefix.strip("/")
        return client

    return one(settings.crm_url, "/crm"), one(settings.billing_url, "/billing")
