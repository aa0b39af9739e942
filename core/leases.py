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

import itertools
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


# One type at a time, through ix_sync_jobs_due_type (job_type, next_run_at): what the
# upstream protection claims with while some type is held back (its upstream paused, open
# or at its limit). The due index above is one walk in next_run_at order across every
# type, filtering by type as it goes, so a held type's backlog, due and older than
# everything else, would be walked past by every claim: O(backlog) each. `ORDER BY
# job_type, next_run_at` is the per-type index's own order, the only plan without a sort.
_PG_CLAIM_TYPE = _PG_CLAIM.replace(
    "job_type = ANY(%(types)s::text[])\n    ORDER BY next_run_at",
    "job_type = %(type)s\n    ORDER BY job_type, next_run_at")
_SQLITE_CLAIM_TYPE = _SQLITE_CLAIM.replace(
    "INDEXED BY ix_sync_jobs_due\n", "INDEXED BY ix_sync_jobs_due_type\n").replace(
    "job_type IN (SELECT value FROM json_each(?))\n    ORDER BY next_run_at",
    "job_type = ?\n    ORDER BY job_type, next_run_at")
assert _PG_CLAIM_TYPE != _PG_CLAIM and _SQLITE_CLAIM_TYPE.count("job_type = ?") == 1

_type_turn = itertools.count()  # which type a per-type claim starts with (fairness)


def claim_rows(conn: Connection, is_postgres: bool, worker_id: str, limit: int, now: float,
               lease_seconds: float, job_types: Sequence[str], *,
               per_type: bool = False) -> list[ClaimedJob]:
    """The claim statement, inside the caller's transaction (driver SQL, one statement;
    with `per_type`, one per type, each type's oldest first, until `limit`)."""
    raw = raw_connection(conn)
    if per_type and len(job_types) > 1:
        start = next(_type_turn) % len(job_types)
        jobs: list[ClaimedJob] = []
        for job_type in [*job_types[start:], *job_types[:start]]:
            if len(jobs) >= limit:
                break
            jobs += claim_rows(conn, is_postgres, worker_id, limit - len(jobs), now,
                               lease_seconds, [job_type], per_type=True)
        jobs.sort(key=lambda j: j.id)
        return jobs
    if is_postgres:
        # Pipelined: the plan settings and the claim travel in one round trip.
        params: dict[str, Any] = {"now": now, "limit": limit, "worker": worker_id,
                                  "expires": now + lease_seconds}
        if per_type:
            params["type"] = job_types[0]
        else:
            params["types"] = list(job_types)
        with pipeline(conn):
            for setting in _PG_CLAIM_PLAN:
                raw.execute(setting)
            cur = raw.execute(_PG_CLAIM_TYPE if per_type else _PG_CLAIM, binary=True,
                              params=params)
        rows = cur.fetchall()
    elif per_type:
        rows = raw.execute(_SQLITE_CLAIM_TYPE, (
            worker_id, now, now + lease_seconds, now, now, job_types[0], limit,
        )).fetchall()
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
