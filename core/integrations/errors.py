"""Typed sync errors. `retryable` decides between backoff and a final `failed`."""

from __future__ import annotations


class SyncError(Exception):
    retryable = False

    def __init__(self, message: str, *, http_status: int | None = None,
                 upstream: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        # The named upstream whose request failed (set where the request is made), so its
        # breaker and pause are the ones updated (core.upstream_protection).
        self.upstream = upstream
        # Seconds the upstream asked to be left alone (Retry-After on a 429 or a 503).
        self.retry_after: float | None = None

    @property
    def error_type(self) -> str:
        return type(self).__name__


class RetryableError(SyncError):
    """Raise from a handler for any transient failure of your own."""

    retryable = True


class RetryLater(RetryableError):
    """Raise from a handler to be retried after `retry_in` seconds (at least; a longer
    backoff wins, as with an upstream's Retry-After). The retry budget still applies."""

    def __init__(self, message: str, *, retry_in: float,
                 http_status: int | None = None) -> None:
        super().__init__(message, http_status=http_status)
        if not 0 <= retry_in <= 86400:
            raise ValueError("retry_in must be 0 to 86400 seconds")
        self.retry_in = float(retry_in)


class UpstreamTimeout(RetryableError):
    """No answer, a 5xx, a timeout or a broken connection."""


class UpstreamRateLimited(RetryableError):
    def __init__(
        self, message: str, *, http_status: int | None = 429, retry_after: float | None = None
    ) -> None:
        super().__init__(message, http_status=http_status)
        self.retry_after = retry_after


class NotFound(SyncError):
    """The upstream says the entity does not exist (404)."""


class ValidationError(SyncError):
    """The upstream's answer, or the job's input, cannot be used as it is."""
