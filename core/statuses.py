"""The words a job's status and an attempt's outcome are written in.

`StrEnum` members are the strings themselves (`JobStatus.DEAD == "dead"`): the database
stores, the JSON carries and the SQL spells the plain values.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    PENDING = "pending"  # waiting for its next_run_at (new, or a retry)
    RUNNING = "running"  # leased by a worker: the attempt in flight
    SUCCESS = "success"
    FAILED = "failed"  # non-retryable error
    DEAD = "dead"  # retryable errors until the retry budget was spent (a dead letter)
    CANCELED = "canceled"  # by an operator


STATUSES: tuple[JobStatus, ...] = tuple(JobStatus)
ACTIVE_STATUSES = (JobStatus.PENDING, JobStatus.RUNNING)
FINISHED_STATUSES = (JobStatus.SUCCESS, JobStatus.FAILED, JobStatus.DEAD, JobStatus.CANCELED)


class AttemptOutcome(StrEnum):
    RUNNING = "running"  # the attempt in flight (no row yet; see core.reads.attempts_for)
    SUCCESS = "success"
    RETRY = "retry"  # retryable error, job rescheduled
    DEAD = "dead"  # retryable error, budget spent
    FAILED = "failed"  # non-retryable error
    LEASE_EXPIRED = "lease_expired"  # worker vanished; recovered by another worker
    LEASE_LOST = "lease_lost"  # worker came back too late; its result was discarded
    CANCELED = "canceled"  # operator canceled the job while it ran
    RELEASED = "released"  # worker shut down before finishing; budget refunded
    TIMEOUT = "timeout"  # ran past its job type's timeout, cancelled; retryable (retry/dead)
