"""One request to an upstream, with every failure turned into a typed SyncError."""

from __future__ import annotations

import json
import math
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from core import clock
from core.integrations.errors import (
    NotFound,
    SyncError,
    UpstreamRateLimited,
    UpstreamTimeout,
    ValidationError,
)

MAX_BODY_BYTES = 1 << 20  # an upstream answer larger than this is refused, not buffered


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None if malformed."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - clock.now()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, min(seconds, 86400.0))


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def raise_for_status(response: httpx.Response, body: bytes, what: str) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    detail = _short(body.decode("utf-8", "replace")) if body else ""
    msg = f"{what} answered {status}" + (f": {detail}" if detail else "")
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        raise UpstreamRateLimited(msg, http_status=status, retry_after=retry_after)
    if status >= 500:
        exc = UpstreamTimeout(msg, http_status=status)
        if status == 503:
            exc.retry_after = parse_retry_after(response.headers.get("retry-after"))
        raise exc
    if status == 404:
        raise NotFound(msg, http_status=status)
    raise ValidationError(msg, http_status=status)


async def request_json(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    what: str,
    json_body: Any = None,
) -> Any:
    """Send one request and return the decoded JSON body, or raise a typed SyncError that
    names the client's upstream (`upstream_name`, set by core.integrations.clients)."""
    try:
        return await _request_json(client, method, url, what=what, json_body=json_body)
    except SyncError as exc:
        if exc.upstream is None:
            exc.upstream = getattr(client, "upstream_name", None)
        raise


async def _request_json(
    client: httpx.AsyncClient, method: str, url: str, *, what: str, json_body: Any
) -> Any:
    try:
        request = client.build_request(method, url, json=json_body)
        response = await client.send(request, stream=True)
        try:
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
                raise ValidationError(
                    f"{what} answer too large ({declared} bytes)", http_status=response.status_code
                )
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise ValidationError(
                        f"{what} answer too large (over {MAX_BODY_BYTES} bytes)",
                        http_status=response.status_code,
                    )
                chunks.append(chunk)
        finally:
            await response.aclose()
    except SyncError:
        raise
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout(f"{what} timed out ({type(exc).__name__})") from None
    except httpx.TransportError as exc:
        reason = _short(str(exc)) or type(exc).__name__
        raise UpstreamTimeout(f"{what} unreachable: {reason}") from None
    body = b"".join(chunks)
    raise_for_status(response, body, what)
    if not body:
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ValidationError(
            f"{what} answered invalid JSON: {_short(body.decode('utf-8', 'replace'), 80)}",
            http_status=response.status_code,
        ) from None


_Model = TypeVar("_Model", bound=BaseModel)


def validated(model: type[_Model], data: Any, what: str) -> _Model:
    """What an upstream answered, checked against the model: a record that does not fit is a
    ValidationError (not retried) naming the first field at fault."""
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "record"
        raise ValidationError(f"{what} failed validation: {where}: {first['msg']}") from None
