"""One attempt: call the handler, classify what happened, decide retry / dead / failed."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from pydantic import ValidationError as PydanticValidationError

from core import clock
from core.handlers import Handler, JobContext
from core.integrations.errors import SyncError, UpstreamRateLimited
from core.models import OUTCOME_DEAD, OUTCOME_FAILED, OUTCOME_RETRY, OUTCOME_SUCCESS
from core.records import ClaimedJob, Completion

MAX_ERROR_CHARS = 2000


def backoff_delay(attempt_count: int, *, base: float, cap: float, jitter: float = 0.0,
                  retry_after: float | None = None,
                  rand: Callable[[], float] = random.random) -> float:
    """base * 2**(attempt_count-1), capped; jitter shaves up to that fraction off;
    a larger Retry-After wins."""
    delay = min(cap, base * (2 ** max(0, attempt_count - 1)))
    if jitter:
        delay *= 1.0 - jitter * rand()
    if retry_after is not None and retry_after > delay:
        delay = retry_after
    return delay


class Backoff:
    def __init__(self, base: float, cap: float, jitter: float = 0.0) -> None:
        self.base, self.cap, self.jitter = base, cap, jitter

    def __call__(self, attempt_count: int, retry_after: float | None = None) -> float:
        return backoff_delay(attempt_count, base=self.base, cap=self.cap, jitter=self.jitter,
                             retry_after=retry_after)


async def execute(job: ClaimedJob, handler: Handler | None, ctx: JobContext,
                  backoff: Backoff, worker_id: str) -> Completion:
    started_at = clock.now()
    t0 = time.perf_counter()
    http_status: int | None = None
    retry_after: float | None = None
    try:
        if handler is None:
            raise LookupError(f"no handler registered for job type {job.job_type!r}")
        result = await handler(ctx)
        if result is not None and not isinstance(result, dict):
            result = {"value": result}
        outcome, error_type, message = OUTCOME_SUCCESS, None, None
    except asyncio.CancelledError:
        raise
    except SyncError as exc:
        result = None
        http_status = exc.http_status
        error_type, message = exc.error_type, exc.message
        if isinstance(exc, UpstreamRateLimited):
            retry_after = exc.retry_after
        outcome = OUTCOME_RETRY if exc.retryable else OUTCOME_FAILED
    except PydanticValidationError as exc:
        result = None
        error_type, message = "ValidationError", str(exc).splitlines()[0]
        outcome = OUTCOME_FAILED
    except Exception as exc:  # a bug in a handler fails its job, never the worker
        result = None
        error_type, message = type(exc).__name__, str(exc) or type(exc).__name__
        outcome = OUTCOME_FAILED
    duration_ms = (time.perf_counter() - t0) * 1000.0
    finished_at = clock.now()
    next_run_at = None
    if outcome == OUTCOME_RETRY:
        if job.attempt_count >= job.max_attempts:
            outcome = OUTCOME_DEAD
        else:
            next_run_at = finished_at + backoff(job.attempt_count, retry_after)
    if message and len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 1] + "…"
    return Completion(
        job_id=job.id, lease_token=job.lease_token, worker_id=worker_id, outcome=outcome,
        started_at=started_at, finished_at=finished_at, duration_ms=duration_ms,
        result=result, error_type=error_type, error_message=message,
        http_status=http_status, next_run_at=next_run_at, correlation_id=job.correlation_id,
    )
