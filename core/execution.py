"""One attempt: call the handler, classify what happened, build its Completion (retry,
dead or failed by core.retry_policy's rule)."""

from __future__ import annotations

import asyncio
import time

from pydantic import ValidationError as PydanticValidationError

from core import clock
from core.handlers import Handler, JobContext
from core.integrations.errors import RetryLater, SyncError, UpstreamRateLimited
from core.records import ClaimedJob, Completion
from core.retry_policy import Backoff, retry_or_dead
from core.statuses import AttemptOutcome

MAX_ERROR_CHARS = 2000


async def execute(job: ClaimedJob, handler: Handler | None, ctx: JobContext,
                  backoff: Backoff, worker_id: str, *,
                  retry_on: tuple[type[BaseException], ...] = (),
                  timeout: float | None = None) -> Completion:
    """Run one attempt. `retry_on`: exception classes retried though not a SyncError;
    `timeout`: seconds after which the handler is cancelled and the attempt ends `timeout`
    (retryable: the job goes to retry or dead like any retryable error)."""
    started_at = clock.now()
    t0 = time.perf_counter()
    http_status: int | None = None
    retry_after: float | None = None
    upstream: str | None = None
    signal: str | None = None
    attempt_outcome: AttemptOutcome | None = None
    outcome: AttemptOutcome
    # Without a timeout there is no deadline to arm: the common case skips its cost.
    deadline = asyncio.timeout(timeout) if timeout is not None else None
    try:
        if handler is None:
            raise LookupError(f"no handler registered for job type {job.job_type!r}")
        # Typed to return a dict or None, a user's handler may still return anything.
        returned: object
        if deadline is None:
            returned = await handler(ctx)
        else:
            async with deadline:
                returned = await handler(ctx)
        result = (returned if returned is None or isinstance(returned, dict)
                  else {"value": returned})
        outcome, error_type, message = AttemptOutcome.SUCCESS, None, None
        signal = "ok"
    except asyncio.CancelledError:
        raise
    except TimeoutError as exc:
        result = None
        if deadline is not None and deadline.expired():
            attempt_outcome = AttemptOutcome.TIMEOUT
            error_type = "Timeout"
            message = f"handler ran past its {timeout:g}s timeout; cancelled"
            outcome = AttemptOutcome.RETRY
        else:  # the handler's own TimeoutError: like any exception
            error_type, message = type(exc).__name__, str(exc) or type(exc).__name__
            outcome = (AttemptOutcome.RETRY if isinstance(exc, retry_on)
                       else AttemptOutcome.FAILED)
    except SyncError as exc:
        result = None
        http_status = exc.http_status
        error_type, message = exc.error_type, exc.message
        retry_after = exc.retry_in if isinstance(exc, RetryLater) else exc.retry_after
        upstream = exc.upstream
        if isinstance(exc, UpstreamRateLimited) or (http_status == 503 and retry_after):
            signal = "rate_limited"  # the upstream asked to be left alone: a pause
        else:
            signal = "failure" if exc.retryable else "alive"
        outcome = (AttemptOutcome.RETRY if exc.retryable or isinstance(exc, retry_on)
                   else AttemptOutcome.FAILED)
    except PydanticValidationError as exc:
        result = None
        error_type, message = "ValidationError", str(exc).splitlines()[0]
        outcome = AttemptOutcome.FAILED
    except Exception as exc:  # a bug in a handler fails its job, never the worker
        result = None
        error_type, message = type(exc).__name__, str(exc) or type(exc).__name__
        outcome = AttemptOutcome.RETRY if isinstance(exc, retry_on) else AttemptOutcome.FAILED
    duration_ms = (time.perf_counter() - t0) * 1000.0
    finished_at = clock.now()
    next_run_at = None
    if outcome == AttemptOutcome.RETRY:
        outcome = retry_or_dead(job.attempt_count, job.max_attempts)
        if outcome == AttemptOutcome.RETRY:
            next_run_at = finished_at + backoff(job.attempt_count, retry_after)
    if message and len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 1] + "…"
    return Completion(
        job_id=job.id, lease_token=job.lease_token, worker_id=worker_id, outcome=outcome,
        started_at=started_at, finished_at=finished_at, duration_ms=duration_ms,
        result=result, error_type=error_type, error_message=message,
        http_status=http_status, next_run_at=next_run_at, correlation_id=job.correlation_id,
        attempt_outcome=attempt_outcome,
        job_type=job.job_type, upstream=upstream, upstream_signal=signal,
        retry_after=retry_after,
    )
