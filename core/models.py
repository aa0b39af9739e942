"""Tables: jobs, their attempts, worker heartbeats, the operator audit log and the slots
of recurring schedules.

The hot path uses these tables through SQLAlchemy Core (`Model.__table__`); the ORM
classes serve the operator reads and the migrations' autogenerate.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import (
    JSON,
    Boolean,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Column lengths that input validation must agree with (core.enqueue).
JOB_TYPE_LENGTH = 64
ENTITY_ID_LENGTH = 128
STATUS_LENGTH = 16
OUTCOME_LENGTH = 16
CORRELATION_ID_LENGTH = 64
WORKER_ID_LENGTH = 160
ERROR_TYPE_LENGTH = 64
UPSTREAM_NAME_LENGTH = 64
SCHEDULE_NAME_LENGTH = 128

# Index predicates (the statuses spelled as in core.statuses).
ACTIVE_SQL = "status IN ('pending', 'running')"
NOT_RUNNING_SQL = "status <> 'running'"


class Base(DeclarativeBase):
    pass


def _key_text(length: int) -> String:
    """Text that hot indexes hold: byte-order ("C") comparisons on PostgreSQL, a memcmp
    instead of strcoll per key compared (SQLite compares bytes already). Migration 0004."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


class SyncJob(Base):
    __tablename__ = "sync_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_type: Mapped[str] = mapped_column(_key_text(JOB_TYPE_LENGTH))
    entity_id: Mapped[str] = mapped_column(_key_text(ENTITY_ID_LENGTH))
    status: Mapped[str] = mapped_column(_key_text(STATUS_LENGTH))
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    correlation_id: Mapped[str] = mapped_column(_key_text(CORRELATION_ID_LENGTH))
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    next_run_at: Mapped[float] = mapped_column(Double)
    lease_owner: Mapped[str | None] = mapped_column(String(WORKER_ID_LENGTH), nullable=True)
    # Incremented by every claim; every write a worker makes is conditional on it.
    lease_token: Mapped[int] = mapped_column(Integer, default=0)
    lease_acquired_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    lease_expires_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_error_type: Mapped[str | None] = mapped_column(String(ERROR_TYPE_LENGTH), nullable=True)
    dead_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    dead_error_type: Mapped[str | None] = mapped_column(String(ERROR_TYPE_LENGTH), nullable=True)
    is_replay: Mapped[bool] = mapped_column(Boolean, default=False)
    replay_of_job_id: Mapped[int | None] = mapped_column(
        ForeignKey("sync_jobs.id"), nullable=True
    )
    replay_of_attempt_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)
    finished_at: Mapped[float | None] = mapped_column(Double, nullable=True)

    __table_args__ = (
        # Idempotency lives in the database: at most one active job per entity.
        Index(
            "uq_sync_jobs_active_entity",
            "job_type",
            "entity_id",
            unique=True,
            sqlite_where=text(ACTIVE_SQL),
            postgresql_where=text(ACTIVE_SQL),
        ),
        # The claim: due pending jobs in next_run_at order.
        Index(
            "ix_sync_jobs_due",
            "next_run_at",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
        # The claim while a type is held back (core.upstream_protection): one type's due
        # jobs, without walking another's backlog (migration 0011). Pending only: an
        # entry per enqueue or retry, none per claim or completion.
        Index(
            "ix_sync_jobs_due_type",
            "job_type",
            "next_run_at",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
        # The console: newest first, filtered by status / type; lease recovery (running
        # jobs are few: at most the workers' total concurrency).
        Index("ix_sync_jobs_status_id", "status", "id"),
        Index("ix_sync_jobs_type_id", "job_type", "id"),
        # Search. On PostgreSQL running jobs are left out (migration 0005): a claim then
        # writes two index entries fewer, and the search finds running jobs through
        # (status, id). SQLite keeps them whole: its planner would not combine the partial
        # indexes for the search's OR and scanned the table instead.
        Index("ix_sync_jobs_entity", "entity_id", postgresql_where=text(NOT_RUNNING_SQL)),
        Index("ix_sync_jobs_correlation", "correlation_id",
              postgresql_where=text(NOT_RUNNING_SQL)),
        # Partial: NULL for most rows, and skipping them saves a write on every claim.
        Index("ix_sync_jobs_replay_of", "replay_of_job_id",
              sqlite_where=text("replay_of_job_id IS NOT NULL"),
              postgresql_where=text("replay_of_job_id IS NOT NULL")),
        # Recent completions (metrics) and retention (core.retention walks it oldest first,
        # with a cursor; migration 0010).
        Index("ix_sync_jobs_finished_at", "finished_at",
              sqlite_where=text("finished_at IS NOT NULL"),
              postgresql_where=text("finished_at IS NOT NULL")),
    )


class SyncJobAttempt(Base):
    """One ended attempt. The attempt in flight has no row: while a job is running, its
    lease columns (owner, token, acquired at) are that attempt, and the row is inserted
    once when it ends (one write per attempt on the hot path instead of two)."""

    __tablename__ = "sync_job_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # No foreign key: its check locked the job row again for every attempt inserted (see
    # migration 0004). Attempts are written only where their job's lease ends.
    job_id: Mapped[int] = mapped_column(Integer)
    # The claim's lease token doubles as the attempt's ordinal number within its job.
    number: Mapped[int] = mapped_column(Integer)
    worker_id: Mapped[str] = mapped_column(String(WORKER_ID_LENGTH))
    started_at: Mapped[float] = mapped_column(Double)
    finished_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    duration_ms: Mapped[float | None] = mapped_column(Double, nullable=True)
    outcome: Mapped[str] = mapped_column(String(OUTCOME_LENGTH))
    error_type: Mapped[str | None] = mapped_column(String(ERROR_TYPE_LENGTH), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    http_status: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (
        Index("uq_attempts_job_number", "job_id", "number", unique=True),
        Index("ix_attempts_finished_at", "finished_at",
              sqlite_where=text("finished_at IS NOT NULL"),
              postgresql_where=text("finished_at IS NOT NULL")),
    )


class Worker(Base):
    __tablename__ = "sync_workers"

    id: Mapped[str] = mapped_column(String(WORKER_ID_LENGTH), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[float] = mapped_column(Double)
    last_seen_at: Mapped[float] = mapped_column(Double)
    state: Mapped[str] = mapped_column(String(16))  # running | paused | stopping | stopped
    concurrency: Mapped[int] = mapped_column(Integer)
    in_flight: Mapped[int] = mapped_column(Integer, default=0)
    processed: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (Index("ix_workers_last_seen", "last_seen_at"),)


class AuditEvent(Base):
    __tablename__ = "sync_audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Double)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    # NULL for an action on an upstream (migration 0008), which names it in `upstream`.
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    upstream: Mapped[str | None] = mapped_column(String(UPSTREAM_NAME_LENGTH), nullable=True)
    new_job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (
        Index("ix_audit_job", "job_id"),
        Index("ix_audit_at", "at"),  # retention: the oldest events first (migration 0009)
    )


class LeaderLease(Base):
    """A fleet-wide role one process holds at a time (the pruner: name 'prune'). On SQLite
    the row is the lock: taken by a conditional upsert while expired or free, renewed by its
    owner; on PostgreSQL an advisory lock is, and the row says who holds it. The row also
    keeps the pruner's figures for `metrics` (core.retention). Migration 0009."""

    __tablename__ = "sync_leader_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(WORKER_ID_LENGTH), nullable=True)
    expires_at: Mapped[float] = mapped_column(Double)
    last_run_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    last_run_finished_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    last_jobs: Mapped[int] = mapped_column(Integer, default=0)
    last_attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_audit: Mapped[int] = mapped_column(Integer, default=0)
    total_jobs: Mapped[int] = mapped_column(Integer, default=0)
    total_attempts: Mapped[int] = mapped_column(Integer, default=0)
    total_audit: Mapped[int] = mapped_column(Integer, default=0)


class ScheduleSlot(Base):
    """One slot of a recurring schedule (core.schedules): the primary key makes a slot
    happen once across every worker. `job_id` is NULL when the slot was skipped because
    the schedule's previous job was still active. Migration 0007."""

    __tablename__ = "sync_schedule_slots"

    schedule: Mapped[str] = mapped_column(String(SCHEDULE_NAME_LENGTH), primary_key=True)
    slot_at: Mapped[float] = mapped_column(Double, primary_key=True)
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[float] = mapped_column(Double)


class SyncUpstream(Base):
    """One named upstream's protection state, shared by the fleet (core.upstream_protection):
    its circuit breaker, a Retry-After pause, the probe lease of a half-open breaker, the
    token bucket of a rate limit and the adaptive (AIMD) rate. Migration 0008."""

    __tablename__ = "sync_upstreams"

    name: Mapped[str] = mapped_column(String(UPSTREAM_NAME_LENGTH), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # closed | open | half_open
    paused_until: Mapped[float | None] = mapped_column(Double, nullable=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)  # consecutive, in the window
    failures_since: Mapped[float | None] = mapped_column(Double, nullable=True)
    opened_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    cooldown_seconds: Mapped[float] = mapped_column(Double)
    next_probe_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    probe_owner: Mapped[str | None] = mapped_column(String(WORKER_ID_LENGTH), nullable=True)
    probe_job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    probe_expires_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    tokens: Mapped[float | None] = mapped_column(Double, nullable=True)
    tokens_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    rate: Mapped[float | None] = mapped_column(Double, nullable=True)  # adaptive, jobs/s
    recent_429: Mapped[int] = mapped_column(Integer, default=0)
    recent_5xx: Mapped[int] = mapped_column(Integer, default=0)
    recent_since: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)
    # The job types calling it, as the fleet's workers declared them (comma-separated).
    job_types: Mapped[str | None] = mapped_column(Text, nullable=True)


# Typed as tables (the ORM annotates `__table__` as a FromClause).
jobs_t = cast(Table, SyncJob.__table__)
attempts_t = cast(Table, SyncJobAttempt.__table__)
workers_t = cast(Table, Worker.__table__)
audit_t = cast(Table, AuditEvent.__table__)
upstreams_t = cast(Table, SyncUpstream.__table__)
schedule_slots_t = cast(Table, ScheduleSlot.__table__)
leases_t = cast(Table, LeaderLease.__table__)
