"""Leases: a worker's claim on a job, the fence every write about it is conditional on,
and the upkeep around it (renew, recover the expired, release on shutdown, abandon).

A claim sets the job `running`, names the worker in `lease_owner` and increments
`lease_token`; while the lease is held the job row's lease columns (owner, token, acquired
at) are the attempt in flight (its attempt row is written when it ends, core.attempts).

The fence: a write about a leased job (a completion, a renewal, a release, a recovery, an
operator's cancel) changes the job only if the row still has the id, the lease token and
the status it was leased with, `(id, lease_token, status='running')`. A worker that lost
its lease (it expired and was recovered, or an operator canceled the job) then changes
nothing. The fence is written here once, in the three shapes the statements need: `fence`
(SQLAlchemy), `fence_sql` (the text fragment of the driver SQL) and `holds_fence` (the
check of a row already read under the write lock).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, select, tuple_, update

from core import clock
from core.attempts import EndedAttempt, close_attempts
from core.db import Database, loads_json, pipeline, raw_connection
from core.models import jobs_t
from core.records import ClaimedJob
from core.retry_policy import Backoff, retry_or_dead
from core.statuses import AttemptOutcome, JobStatus

_NO_BACKOFF = Backoff(0.0, 0.0)

# --- the fence --------------------------------------------------------------------------------


def fence(job_id: int, token: int,
          status: JobStatus = JobStatus.RUNNING) -> tuple[ColumnElement[bool], ...]:
    """WHERE conditions of a fenced write (SQLAlchemy). `status` is `running` for a
    worker's writes; an operator's cancel fences on the status it read (pending or
    running) with the token it read, so a claim in between makes it miss."""
    return (jobs_t.c.id == job_id, jobs_t.c.lease_token == token, jobs_t.c.status == status)


def fence_many(held: Iterable[tuple[int, int]]) -> tuple[ColumnElement[bool], ...]:
    """The fence for many (job id, lease token) pairs at once."""
    return (tuple_(jobs_t.c.id, jobs_t.c.lease_token).in_(list(held)),
            jobs_t.c.status == JobStatus.RUNNING)


def fence_sql(job_id: str, token: str, table: str = "") -> str:
    """The fence as a SQL text fragment for the driver statements: `job_id` and `token` are
    their parameter markers or columns, `table` the jobs table's alias if it has one."""
    t = f"{table}." if table else ""
    return f"{t}id = {job_id} AND {t}lease_token = {token} AND {t}status = 'running'"


def holds_fence(current: tuple[int, str] | None, token: int) -> bool:
    """The fence checked on a job's (lease_token, status) as read under the write lock."""
    return current == (token, JobStatus.RUNNING)


# --- claim ------------------------------------------------------------------------------------

_PG_CLAIM = """
WITH due AS (
    SELECT id FROM sync_jobs
    WHERE status = 'pending' AND next_run_at <= %(now)s AND job_type = ANY(%(types)s::text[])
    ORDER BY next_run_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE sync_jobs AS j
    SET status = 'running', lease_owner = %(worker)s, lease_token = j.lease_token + 1,
        attempt_count = j.attempt_count + 1, lease_acquired_at = %(now)s,
        lease_expires_at = %(expires)s, updated_at = %(now)s
    FROM due WHERE j.id = due.id
    RETURNING j.id, j.job_type, j.entity_id, j.payload::text, j.correlation_id,
              j.attempt_count, j.max_attempts, j.lease_token
)
SELECT * FROM claimed
"""

# The claim must walk the due index (pending jobs in next_run_at order) and stop after
# `limit` rows, whatever the table's statistics say: a plan that reads every pending job
# and sorts them costs O(backlog) per claim. SQLite takes `INDEXED BY`; PostgreSQL,
# planning without fresh statistics (a burst of enqueues before autovacuum analyzes),
# prefers the idempotency index plus a sort, so the claim transaction turns sorts and
# bitmap scans off for itself (`SET LOCAL`).
_PG_CLAIM_PLAN = ("SET LOCAL enable_sort = off", "SET LOCAL enable_bitmapscan = off")

_SQLITE_CLAIM = """
UPDATE sync_jobs
SET status = 'running', lease_owner = ?, lease_token = lease_token + 1,
    attempt_count = attempt_count + 1, lease_acquired_at = ?, lease_expires_at = ?,
    updated_at = ?
WHERE id IN (
    SELECT id FROM sync_jobs INDEXED BY ix_sync_jobs_due
    WHERE status = 'pending' AND next_run_at <= ? AND job_type IN (SELECT value FROM json_each(?))
    ORDER BY next_run_at
    LIMIT ?
)
RETURNING id, job_type, entity_id, payload, correlation_id, attempt_count, max_attempts,
          lease_token
"""


def claim_rows(conn: Connection, is_postgres: bool, worker_id: str, limit: int, now: float,
               lease_seconds: float, job_types: Sequence[str]) -> list[ClaimedJob]:
    """The claim statement, inside the caller's transaction (driver SQL, one statement)."""
    raw = raw_connection(conn)
    if is_postgres:
        # Pipelined: the plan settings and the claim travel in one round trip.
        with pipeline(conn):
            for setting in _PG_CLAIM_PLAN:
                raw.execute(setting)
            cur = raw.execute(_PG_CLAIM, binary=True, params={
                "now": now, "types": list(job_types), "limit": limit, "worker": worker_id,
                "expires": now + lease_seconds,
            })
        rows = cur.fetchall()
    else:
        rows = raw.execute(_SQLITE_CLAIM, (
            worker_id, now, now + lease_seconds, now, now, json.dumps(list(job_types)), limit,
        )).fetchall()
    jobs = [ClaimedJob(r[0], r[1], r[2], loads_json(r[3]), r[4], r[5], r[6], r[7], now)
            for r in rows]
    jobs.sort(key=lambda j: j.id)
    return jobs


def claim(
    db: Database,
    worker_id: str,
    limit: int,
    *,
    lease_seconds: float,
    job_types: Sequence[str],
) -> list[ClaimedJob]:
    """Lease up to `limit` due jobs in one transaction. Each lease is an attempt in flight;
    its row in the attempt history is written when it ends."""
    if limit <= 0 or not job_types:
        return []
    now = clock.now()
    # One statement, one round trip on PostgreSQL; fixed, prepared SQL text.
    with db.write() as conn:
        return claim_rows(conn, db.is_postgres, worker_id, limit, now, lease_seconds,
                          job_types)


# --- upkeep -----------------------------------------------------------------------------------

def renew_leases(db: Database, worker_id: str, held: Mapping[int, int],
                 lease_seconds: float) -> set[int]:
    """Extend the leases this worker still holds; returns the ids it still holds."""
    if not held:
        return set()
    now = clock.now()
    stmt = (
        update(jobs_t)
        .where(*fence_many(held.items()), jobs_t.c.lease_owner == worker_id)
        .values(lease_expires_at=now + lease_seconds)
        .returning(jobs_t.c.id)
    )
    with db.write() as conn:
        return set(conn.execute(stmt).scalars())


def abandon(db: Database, worker_id: str, lost: Mapping[int, tuple[int, float]],
            message: str) -> None:
    """Record attempts whose lease this worker found lost: {job_id: (token, started_at)}.
    It stops them and writes nothing else; an attempt someone else closed as `canceled`
    stays so, one recovery closed as `lease_expired` becomes `lease_lost`."""
    if not lost:
        return
    now = clock.now()
    with db.write() as conn:
        close_attempts(conn, db.is_postgres, [
            EndedAttempt(job_id, token, worker_id, started, now, None,
                         AttemptOutcome.LEASE_LOST, "LeaseLost", message)
            for job_id, (token, started) in lost.items()], lease_lost=True)


def release(db: Database, worker_id: str, held: Mapping[int, int]) -> int:
    """Give back jobs a stopping worker could not finish, refunding their attempt."""
    if not held:
        return 0
    now = clock.now()
    closed: list[EndedAttempt] = []
    with db.write() as conn:
        for job_id, token in held.items():
            started = conn.execute(
                update(jobs_t)
                .where(*fence(job_id, token), jobs_t.c.lease_owner == worker_id)
                .values(status=JobStatus.PENDING, attempt_count=jobs_t.c.attempt_count - 1,
                        lease_owner=None, lease_expires_at=None, next_run_at=now,
                        updated_at=now)
                .returning(jobs_t.c.lease_acquired_at)
            ).scalar()
            if started is not None:
                closed.append(EndedAttempt(
                    job_id, token, worker_id, started, now, None, AttemptOutcome.RELEASED,
                    "Released", "worker shut down before finishing; not counted"))
        close_attempts(conn, db.is_postgres, closed)
        if closed:
            db.notify(conn)
    return len(closed)


def recover_expired(
    db: Database, *, backoff: Backoff | None = None, limit: int = 200,
    backoffs: Mapping[str, Backoff] | None = None,
) -> list[tuple[int, str]]:
    """Return expired leases to the queue (or the dead letters when the budget is spent).
    `backoffs`: a job type's own backoff (its policy), else `backoff`.

    The abandoned attempt is closed as `lease_expired` and counts against the budget
    (core.retry_policy.retry_or_dead), so a job that kills its worker every time ends
    `dead` instead of looping forever.
    """
    now = clock.now()
    # Running jobs are few (at most the workers' total concurrency), so the (status, id)
    # index finds them; a lease-expiry index would cost a write on every claim and turn
    # every lease renewal into a non-HOT update on PostgreSQL.
    candidates = (
        select(jobs_t.c.id, jobs_t.c.lease_token, jobs_t.c.attempt_count,
               jobs_t.c.max_attempts, jobs_t.c.lease_owner, jobs_t.c.lease_acquired_at,
               jobs_t.c.job_type)
        .where(jobs_t.c.status == JobStatus.RUNNING, jobs_t.c.lease_expires_at < now)
        .order_by(jobs_t.c.id)
        .limit(limit)
    )
    if db.is_postgres:
        candidates = candidates.with_for_update(skip_locked=True)
    recovered: list[tuple[int, str]] = []
    closed: list[EndedAttempt] = []
    with db.write() as conn:
        for job_id, token, count, max_attempts, owner, started, job_type in conn.execute(
                candidates):
            message = f"lease expired: worker {owner} stopped renewing it"
            values: dict[str, Any]
            if retry_or_dead(count, max_attempts) == AttemptOutcome.DEAD:
                values = dict(status=JobStatus.DEAD, finished_at=now, dead_error=message,
                              dead_error_type="LeaseExpired")
            else:
                own = backoffs.get(job_type) if backoffs else None
                delay = (own or backoff or _NO_BACKOFF)(count)
                values = dict(status=JobStatus.PENDING, next_run_at=now + delay)
            res = conn.execute(
                update(jobs_t)
                .where(*fence(job_id, token))
                .values(lease_owner=None, lease_expires_at=None, updated_at=now,
                        last_error=message, last_error_type="LeaseExpired", **values)
            )
            if res.rowcount != 1:
                continue
            closed.append(EndedAttempt(job_id, token, owner or "unknown", started or now, now,
                                       None, AttemptOutcome.LEASE_EXPIRED, "LeaseExpired",
                                       message))
            recovered.append((job_id, values["status"]))
        close_attempts(conn, db.is_postgres, closed)
        if any(status == JobStatus.PENDING for _, status in recovered):
            db.notify(conn)
    return recovered
