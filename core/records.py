"""Plain records the engine hands to its faces (CLI, console, scripts)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from sqlalchemy import Row

from core import clock


class _Record:
    @classmethod
    def from_row(cls, row: Row[Any]) -> Any:
        m = row._mapping
        return cls(**{f.name: m[f.name] for f in fields(cls)})  # type: ignore[arg-type]

    def to_dict(self, *, iso_times: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = asdict(self)  # type: ignore[call-overload]
        if iso_times:
            for key, value in data.items():
                if key.endswith("_at") and isinstance(value, float):
                    data[key] = clock.iso(value)
        return data


@dataclass(slots=True)
class Job(_Record):
    id: int
    job_type: str
    entity_id: str
    status: str
    payload: dict[str, Any] | None
    result: dict[str, Any] | None
    correlation_id: str
    attempt_count: int
    max_attempts: int
    next_run_at: float
    lease_owner: str | None
    lease_token: int
    lease_acquired_at: float | None
    lease_expires_at: float | None
    last_error: str | None
    last_error_type: str | None
    dead_error: str | None
    dead_error_type: str | None
    is_replay: bool
    replay_of_job_id: int | None
    replay_of_attempt_id: int | None
    created_at: float
    updated_at: float
    finished_at: float | None


@dataclass(slots=True)
class Attempt(_Record):
    id: int
    job_id: int
    number: int
    worker_id: str
    started_at: float
    finished_at: float | None
    duration_ms: float | None
    outcome: str
    error_type: str | None
    error_message: str | None
    http_status: int | None


@dataclass(slots=True)
class WorkerInfo(_Record):
    id: str
    host: str
    pid: int
    started_at: float
    last_seen_at: float
    state: str
    concurrency: int
    in_flight: int
    processed: int


@dataclass(slots=True)
class ClaimedJob:
    """What a worker needs to run one attempt; `lease_token` fences every write about it."""

    id: int
    job_type: str
    entity_id: str
    payload: dict[str, Any] | None
    correlation_id: str
    attempt_count: int
    max_attempts: int
    lease_token: int
    claimed_at: float


@dataclass(slots=True)
class Completion:
    """The result of one attempt, waiting to be written (fenced) by the worker."""

    job_id: int
    lease_token: int
    worker_id: str
    outcome: str  # success | retry | dead | failed
    started_at: float
    finished_at: float
    duration_ms: float
    result: dict[str, Any] | None = None
    error_type: str | None = None
    error_message: str | None = None
    http_status: int | None = None
    next_run_at: float | None = None
    correlation_id: str | None = None  # for the log line; never written by the completion
    # For upstream protection (never written by the completion): the job's type, the
    # upstream an error named, what the attempt says about it (ok | alive | failure |
    # rate_limited) and the Retry-After it was given.
    job_type: str | None = None
    upstream: str | None = None
    upstream_signal: str | None = None
    retry_after: float | None = None
    # The attempt row's outcome when it is not `outcome` (the job's transition): `timeout`
    # for an attempt cancelled at its job type's timeout, whose job goes to retry or dead.
    attempt_outcome: str | None = None
