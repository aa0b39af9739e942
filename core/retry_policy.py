"""When a failed attempt runs again, and when it never does: the backoff and the
dead-letter rule.

The dead-letter rule is written once, in `retry_or_dead`: a retryable failure retries
while the job has budget left and makes it a dead letter (status `dead`) once
`attempt_count >= max_attempts`. Both ways an attempt can fail retryably use it: a handler's
retryable error (core.execution) and a lease that expired because its worker vanished
(core.leases.recover_expired), so a job that kills its worker every time ends `dead`
instead of looping forever.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from core.statuses import AttemptOutcome

if TYPE_CHECKING:
    from core.config import Settings


def retry_or_dead(attempt_count: int,
                  max_attempts: int) -> Literal[AttemptOutcome.RETRY, AttemptOutcome.DEAD]:
    """What a retryable failure of attempt number `attempt_count` leads to."""
    if attempt_count >= max_attempts:
        return AttemptOutcome.DEAD
    return AttemptOutcome.RETRY


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
    return float(delay)


class Backoff:
    def __init__(self, base: float, cap: float, jitter: float = 0.0) -> None:
        self.base, self.cap, self.jitter = base, cap, jitter

    def __call__(self, attempt_count: int, retry_after: float | None = None) -> float:
        return backoff_delay(attempt_count, base=self.base, cap=self.cap, jitter=self.jitter,
                             retry_after=retry_after)


# --- a job type's policy ------------------------------------------------------------------------

_POLICY_LIMITS: dict[str, tuple[float, float]] = {
    "max_attempts": (1, 101), "backoff_base": (0, 3600), "backoff_cap": (0, 86400),
    "jitter": (0, 1), "timeout": (0.001, 86400),
}


@dataclass(frozen=True, slots=True)
class Policy:
    """A job type's policy as declared; None: the settings' value."""

    max_attempts: int | None = None
    backoff_base: float | None = None
    backoff_cap: float | None = None
    jitter: float | None = None
    retry_on: tuple[type[BaseException], ...] = ()
    timeout: float | None = None

    @classmethod
    def of(cls, job_type: str, **fields: Any) -> Policy:
        """Validated; raises ValueError naming the job type and the field."""
        unknown = set(fields) - {"max_attempts", "backoff_base", "backoff_cap", "jitter",
                                 "retry_on", "timeout"}
        if unknown:
            raise TypeError(f"job type {job_type!r}: unknown policy {sorted(unknown)[0]!r}")
        for key, (low, high) in _POLICY_LIMITS.items():
            value = fields.get(key)
            if value is None:
                continue
            if (isinstance(value, bool) or not isinstance(value, int | float)
                    or math.isnan(value) or not low <= value <= high):
                raise ValueError(f"job type {job_type!r}: {key} must be a number from "
                                 f"{low:g} to {high:g}, not {value!r}")
            if key == "max_attempts" and not isinstance(value, int):
                raise ValueError(f"job type {job_type!r}: max_attempts must be a whole number")
        retry_on = tuple(fields.get("retry_on") or ())
        for exc_type in retry_on:
            if not (isinstance(exc_type, type) and issubclass(exc_type, BaseException)):
                raise TypeError(f"job type {job_type!r}: retry_on takes exception classes, "
                                f"not {exc_type!r}")
        return cls(fields.get("max_attempts"), fields.get("backoff_base"),
                   fields.get("backoff_cap"), fields.get("jitter"), retry_on,
                   fields.get("timeout"))


@dataclass(frozen=True, slots=True)
class JobPolicy:
    """A job type's policy in force: the declaration with the settings filled in."""

    max_attempts: int
    backoff: Backoff
    retry_on: tuple[type[BaseException], ...] = ()
    timeout: float | None = None


def resolve_policy(policy: Policy, settings: Settings) -> JobPolicy:
    def pick(value: float | None, default: float) -> float:
        return default if value is None else value

    backoff = Backoff(pick(policy.backoff_base, settings.job_backoff_seconds_base),
                      pick(policy.backoff_cap, settings.job_backoff_seconds_cap),
                      pick(policy.jitter, settings.job_backoff_jitter))
    max_attempts = settings.max_attempts if policy.max_attempts is None else policy.max_attempts
    return JobPolicy(max_attempts, backoff, policy.retry_on, policy.timeout)
