"""httpx clients for CRM and Billing: real URLs from settings, else the in-process mock."""

from __future__ import annotations

from contextvars import ContextVar

import httpx

from core.config import Settings
from core.integrations.mock import MockUpstream

_default_mock: MockUpstream | None = None

# Set by the worker in each job's task; every request made inside it carries the header.
correlation_id_var: ContextVar[str | None] = ContextVar("correlation_id", default=None)


async def _add_correlation(request: httpx.Request) -> None:
    correlation_id = correlation_id_var.get()
    if correlation_id:
        request.headers["X-Correlation-ID"] = correlation_id


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

    hooks = {"request": [_add_correlation]}

    def one(url: str | None, prefix: str) -> httpx.AsyncClient:
        if url:
            return httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits,
                                     event_hooks=hooks)
        transport = (mock or default_mock()).transport()
        return httpx.AsyncClient(base_url=f"http://mock{prefix}", transport=transport,
                                 timeout=timeout, event_hooks=hooks)

    return one(settings.crm_url, "/crm"), one(settings.billing_url, "/billing")
