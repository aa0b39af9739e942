"""Backoff arithmetic and the classification of upstream answers."""

from __future__ import annotations

import asyncio
from email.utils import format_datetime

import httpx
import pytest

from core import clock
from core.integrations.errors import (
    NotFound,
    SyncError,
    UpstreamRateLimited,
    UpstreamTimeout,
    ValidationError,
)
from core.integrations.http import parse_retry_after, request_json
from core.retry_policy import backoff_delay


def test_backoff_doubles_and_caps() -> None:
    delays = [backoff_delay(n, base=1.0, cap=60.0) for n in range(1, 9)]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60]


def test_backoff_jitter_only_shortens_within_fraction() -> None:
    assert backoff_delay(3, base=1.0, cap=60, jitter=0.5, rand=lambda: 1.0) == 2.0
    assert backoff_delay(3, base=1.0, cap=60, jitter=0.5, rand=lambda: 0.0) == 4.0
    assert backoff_delay(3, base=1.0, cap=60, jitter=0.25, rand=lambda: 0.5) == 3.5


def test_retry_after_wins_only_when_larger() -> None:
    assert backoff_delay(1, base=1.0, cap=60, retry_after=7) == 7
    assert backoff_delay(5, base=1.0, cap=60, retry_after=7) == 16


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("nan") is None
    clock.set_clock(lambda: 1_700_000_000.0)
    when = clock.to_datetime(1_700_000_030.0)
    assert when is not None
    assert parse_retry_after(format_datetime(when, usegmt=True)) == pytest.approx(30.0)


def _call(status: int, body: bytes = b"{}", headers: dict[str, str] | None = None,
          exc: Exception | None = None) -> object:
    def handler(request: httpx.Request) -> httpx.Response:
        if exc is not None:
            raise exc
        return httpx.Response(status, content=body, headers=headers or {})

    async def go() -> object:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler),
                                     base_url="http://up") as client:
            return await request_json(client, "GET", "/x", what="CRM")

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [(500, UpstreamTimeout, True), (502, UpstreamTimeout, True), (503, UpstreamTimeout, True),
     (504, UpstreamTimeout, True), (429, UpstreamRateLimited, True), (404, NotFound, False),
     (400, ValidationError, False), (422, ValidationError, False), (302, ValidationError, False)],
)
def test_status_classification(status: int, kind: type[SyncError], retryable: bool) -> None:
    with pytest.raises(kind) as info:
        _call(status)
    assert info.value.retryable is retryable
    assert info.value.http_status == status


def test_rate_limit_carries_retry_after() -> None:
    with pytest.raises(UpstreamRateLimited) as info:
        _call(429, headers={"Retry-After": "5"})
    assert info.value.retry_after == 5.0
    with pytest.raises(UpstreamRateLimited) as info:
        _call(429, headers={"Retry-After": "garbage"})
    assert info.value.retry_after is None


@pytest.mark.parametrize("exc", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"),
                                 httpx.RemoteProtocolError("eof")])
def test_transport_failures_are_retryable(exc: Exception) -> None:
    with pytest.raises(UpstreamTimeout):
        _call(200, exc=exc)


def test_bad_bodies_are_validation_errors() -> None:
    with pytest.raises(ValidationError, match="invalid JSON"):
        _call(200, body=b"{nope")
    with pytest.raises(ValidationError, match="too large"):
        _call(200, body=b"x" * ((1 << 20) + 10))
    assert _call(200, body=b'{"ok": true}') == {"ok": True}
