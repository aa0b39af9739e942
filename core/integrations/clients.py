"""httpx clients for CRM and Billing: real URLs from settings, else the in-process mock."""

from __future__ import annotations

from contextvars import ContextVar

import httpx

from core.config import Settings
from core.integrations.mock import MockUpstream

_default_mock: MockUpstream | None = None

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


def make_clients(settings: Settings, mock: MockUpstream | None = None
                 ) -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
    timeout = httpx.Timeout(settings.http_timeout_seconds)
    limits = httpx.Limits(max_connections=max(10, settings.concurrency * 2),
                          max_keepalive_connections=max(10, settings.concurrency))

    hooks = {"request": [_add_job_headers]}

    def one(url: str | None, prefix: str) -> httpx.AsyncClient:
        if url:
            client = _Client(base_url=url, timeout=timeout, limits=limits, event_hooks=hooks)
        else:
            transport = (mock or default_mock()).transport()
            client = _Client(base_url=f"http://mock{prefix}", transport=transport,
                             timeout=timeout, event_hooks=hooks)
        client.upstream_name = prefix.strip("/")
        return client

    return one(settings.crm_url, "/crm"), one(settings.billing_url, "/billing")
