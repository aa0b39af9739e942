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

import random
from collections.abc import Callable
from typing import Literal

from core.statuses import AttemptOutcome


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
