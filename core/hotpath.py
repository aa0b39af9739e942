"""The worker's hot path in driver SQL: claim, complete and bulk enqueue.

`core.queue` keeps the contract (and the readable SQLAlchemy reads); this module is how the
three statements a busy worker repeats thousands of times a second are written:

- the SQL text is fixed whatever the batch size (PostgreSQL takes a batch as arrays through
  `unnest`, SQLite as `executemany` or one JSON parameter), so it is parsed and planned once
  per connection (psycopg prepares it; sqlite3 caches it) and SQLAlchemy compiles nothing;
- a claim is one round trip on PostgreSQL (lease the jobs and open their attempts in one
  statement);
- a batch of completions is one statement on PostgreSQL, and on SQLite one read plus
  `executemany` under the write lock `BEGIN IMMEDIATE` already holds.

Fencing is unchanged: every job write is conditional on `(id, lease_token,
status='running')`, checked per job inside the statement; a completion whose condition
does not hold changes no job, and its attempt is marked `lease_lost`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection

from core.db import chunks
from core.models import OUTCOME_LEASE_LOST
from core.records import ClaimedJob, Completion

# Job status written by each completion outcome.
_STATUS_FOR = {"success": "success", "retry": "pending", "dead": "dead", "failed": "failed"}


def _raw(conn: Connection) -> Any:
    """The DBAPI connection under a SQLAlchemy connection, inside its open transaction."""
    return conn.connection.driver_connection


def _dumps(value: Any) -> str:
    # The same text SQLAlchemy's JSON type writes (None is stored as JSON null).
    return json.dumps(value)


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


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
    RETURNING j.id, j.job_type, j.entity_id, j.payload, j.correlation_id, j.attempt_count,
              j.max_attempts, j.lease_token
), opened AS (
    INSERT INTO sync_job_attempts (job_id, number, worker_id, started_at, outcome)
    SELECT id, lease_token, %(worker)s, %(now)s, 'running' FROM claimed
)
SELECT * FROM claimed
"""

# The claim must walk the due index (pending jobs in next_run_at order) and stop after
# `limit` rows, whatever the table's statistics say: a plan that reads every pending job
# and sorts them costs O(backlog) per claim (seconds at a million jobs). SQLite takes
# `INDEXED BY`; PostgreSQL, planning without fresh statistics (a burst of enqueues
# before autovacuum analyzes), prefers the idempotency index plus a sort, so the claim
# transaction turns sorts and bitmap scans off for itself (`SET LOCAL`).
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

_SQLITE_OPEN_ATTEMPT = (
    "INSERT INTO sync_job_attempts (job_id, number, worker_id, started_at, outcome) "
    "VALUES (?, ?, ?, ?, 'running')"
)


def claim(conn: Connection, is_postgres: bool, worker_id: str, limit: int, now: float,
          lease_seconds: float, job_types: Sequence[str]) -> list[ClaimedJob]:
    raw = _raw(conn)
    if is_postgres:
        # Pipelined: the plan settings and the claim travel in one round trip.
        with raw.pipeline():
            for setting in _PG_CLAIM_PLAN:
                raw.execute(setting)
            cur = raw.execute(_PG_CLAIM, {
                "now": now, "types": list(job_types), "limit": limit, "worker": worker_id,
                "expires": now + lease_seconds,
            })
        rows = cur.fetchall()
    else:
        rows = raw.execute(_SQLITE_CLAIM, (
            worker_id, now, now + lease_seconds, now, now, json.dumps(list(job_types)), limit,
        )).fetchall()
        if rows:
            raw.executemany(_SQLITE_OPEN_ATTEMPT,
                            [(r[0], r[7], worker_id, now) for r in rows])
    jobs = [ClaimedJob(r[0], r[1], r[2], _loads(r[3]), r[4], r[5], r[6], r[7], now)
            for r in rows]
    jobs.sort(key=lambda j: j.id)
    return jobs


# --- complete ---------------------------------------------------------------------------------
#
# One row per completion: (id, token, status, outcome, finished_at, duration_ms, http_status,
# result_json, error_type, error_message, next_run_at). Which columns a completion writes
# depends on its outcome (as the ORM-era per-job UPDATEs did): success sets the
# result and finished_at; retry sets next_run_at and last_error*; dead sets finished_at,
# last_error* and dead_error*; failed sets finished_at and last_error*.

_PG_COMPLETE = """
WITH v AS (
    SELECT * FROM unnest(%s::int[], %s::int[], %s::text[], %s::text[], %s::float8[],
                         %s::float8[], %s::int[], %s::text[], %s::text[], %s::text[],
                         %s::float8[])
        AS v(id, tok, status, outcome, fin, dur, http, res, err_t, err_m, nxt)
), done AS (
    UPDATE sync_jobs AS j SET
        status = v.status,
        result = CASE WHEN v.outcome = 'success' THEN v.res::json ELSE j.result END,
        finished_at = CASE WHEN v.outcome = 'retry' THEN j.finished_at ELSE v.fin END,
        next_run_at = CASE WHEN v.outcome = 'retry' THEN v.nxt ELSE j.next_run_at END,
        last_error = CASE WHEN v.outcome = 'success' THEN j.last_error ELSE v.err_m END,
        last_error_type = CASE WHEN v.outcome = 'success' THEN j.last_error_type
                               ELSE v.err_t END,
        dead_error = CASE WHEN v.outcome = 'dead' THEN v.err_m ELSE j.dead_error END,
        dead_error_type = CASE WHEN v.outcome = 'dead' THEN v.err_t ELSE j.dead_error_type END,
        updated_at = v.fin, lease_owner = NULL, lease_expires_at = NULL
    FROM v
    WHERE j.id = v.id AND j.lease_token = v.tok AND j.status = 'running'
    RETURNING j.id
), closed AS (
    UPDATE sync_job_attempts AS a SET
        outcome = v.outcome, finished_at = v.fin, duration_ms = v.dur, error_type = v.err_t,
        error_message = v.err_m, http_status = v.http
    FROM v JOIN done ON done.id = v.id
    WHERE a.job_id = v.id AND a.number = v.tok
)
SELECT id FROM done
"""

_SQLITE_FENCE_READ = "SELECT id, lease_token, status FROM sync_jobs WHERE id IN ({})"

_SQLITE_COMPLETE = """
UPDATE sync_jobs SET
    status = ?2,
    result = CASE WHEN ?3 = 'success' THEN ?7 ELSE result END,
    finished_at = CASE WHEN ?3 = 'retry' THEN finished_at ELSE ?4 END,
    next_run_at = CASE WHEN ?3 = 'retry' THEN ?10 ELSE next_run_at END,
    last_error = CASE WHEN ?3 = 'success' THEN last_error ELSE ?9 END,
    last_error_type = CASE WHEN ?3 = 'success' THEN last_error_type ELSE ?8 END,
    dead_error = CASE WHEN ?3 = 'dead' THEN ?9 ELSE dead_error END,
    dead_error_type = CASE WHEN ?3 = 'dead' THEN ?8 ELSE dead_error_type END,
    updated_at = ?4, lease_owner = NULL, lease_expires_at = NULL
WHERE id = ?1 AND lease_token = ?11 AND status = 'running'
"""

_SQLITE_CLOSE_ATTEMPT = """
UPDATE sync_job_attempts SET outcome = ?3, finished_at = ?4, duration_ms = ?5,
    http_status = ?6, error_type = ?8, error_message = ?9
WHERE job_id = ?1 AND number = ?11
"""

_LEASE_LOST = {
    True: """UPDATE sync_job_attempts SET outcome = 'lease_lost', finished_at = %s,
             duration_ms = %s, error_type = 'LeaseLost', error_message = %s, http_status = %s
             WHERE job_id = %s AND number = %s AND outcome IN ('running', 'lease_expired')""",
    False: """UPDATE sync_job_attempts SET outcome = 'lease_lost', finished_at = ?,
              duration_ms = ?, error_type = 'LeaseLost', error_message = ?, http_status = ?
              WHERE job_id = ? AND number = ? AND outcome IN ('running', 'lease_expired')""",
}
assert OUTCOME_LEASE_LOST == "lease_lost"


def complete(conn: Connection, is_postgres: bool,
             completions: Sequence[Completion]) -> list[bool]:
    for c in completions:
        if c.outcome not in _STATUS_FOR:
            raise ValueError(f"not a completion outcome: {c.outcome}")
    raw = _raw(conn)
    if is_postgres:
        cols: list[list[Any]] = [[] for _ in range(11)]
        for c in completions:
            row = (c.job_id, c.lease_token, _STATUS_FOR[c.outcome], c.outcome, c.finished_at,
                   c.duration_ms, c.http_status,
                   _dumps(c.result) if c.outcome == "success" else None,
                   c.error_type, c.error_message, c.next_run_at)
            for col, value in zip(cols, row, strict=True):
                col.append(value)
        applied_ids = {r[0] for r in raw.execute(_PG_COMPLETE, cols).fetchall()}
    else:
        ids = list(dict.fromkeys(c.job_id for c in completions))
        current = {}
        for part in chunks(ids, 500):
            sql = _SQLITE_FENCE_READ.format(",".join("?" * len(part)))
            for job_id, token, status in raw.execute(sql, part):
                current[job_id] = (token, status)
        # We hold the write lock (BEGIN IMMEDIATE), so what we just read is what the
        # conditional UPDATE below will see; the condition stays in its WHERE regardless.
        rows = [
            (c.job_id, _STATUS_FOR[c.outcome], c.outcome, c.finished_at, c.duration_ms,
             c.http_status, _dumps(c.result) if c.outcome == "success" else None,
             c.error_type, c.error_message, c.next_run_at, c.lease_token)
            for c in completions
            if current.get(c.job_id) == (c.lease_token, "running")
        ]
        applied_ids = {r[0] for r in rows}
        if rows:
            cur = raw.executemany(_SQLITE_COMPLETE, rows)
            if cur.rowcount != len(rows):  # pragma: no cover - a duplicate in the batch
                raise RuntimeError("completion batch changed under the write lock")
            raw.executemany(_SQLITE_CLOSE_ATTEMPT, rows)
    applied = [c.job_id in applied_ids for c in completions]
    lost = [(c.finished_at, c.duration_ms,
             f"late result ({c.outcome}) discarded: lease lost", c.http_status,
             c.job_id, c.lease_token)
            for c, ok in zip(completions, applied, strict=True) if not ok]
    if lost:
        if is_postgres:
            with raw.cursor() as cur:
                cur.executemany(_LEASE_LOST[True], lost)
        else:
            raw.executemany(_LEASE_LOST[False], lost)
    return applied


# --- bulk enqueue -----------------------------------------------------------------------------

_PG_ENQUEUE = """
INSERT INTO sync_jobs (job_type, entity_id, status, payload, correlation_id, attempt_count,
                       max_attempts, next_run_at, lease_token, is_replay, created_at, updated_at)
SELECT %(type)s, u.e, 'pending', %(payload)s::json, u.c, 0, %(max)s, %(now)s, 0, false,
       %(now)s, %(now)s
FROM unnest(%(entities)s::text[], %(corrs)s::text[]) AS u(e, c)
ON CONFLICT (job_type, entity_id) WHERE status IN ('pending', 'running') DO NOTHING
RETURNING id, entity_id
"""

_SQLITE_ENQUEUE = """
INSERT INTO sync_jobs (job_type, entity_id, status, payload, correlation_id, attempt_count,
                       max_attempts, next_run_at, lease_token, is_replay, created_at, updated_at)
SELECT ?1, json_extract(u.value, '$[0]'), 'pending', ?2, json_extract(u.value, '$[1]'), 0, ?3,
       ?4, 0, 0, ?4, ?4
FROM json_each(?5) AS u WHERE true
ON CONFLICT (job_type, entity_id) WHERE status IN ('pending', 'running') DO NOTHING
RETURNING id, entity_id
"""


def insert_jobs(conn: Connection, is_postgres: bool, job_type: str,
                entities: Sequence[str], correlation_ids: Sequence[str],
                payload: dict[str, Any] | None, max_attempts: int,
                now: float) -> list[tuple[int, str]]:
    """Insert pending jobs; the ones an active job already holds are skipped (the partial
    unique index decides). Returns (id, entity_id) of the inserted ones."""
    raw = _raw(conn)
    if is_postgres:
        return raw.execute(_PG_ENQUEUE, {
            "type": job_type, "payload": _dumps(payload), "max": max_attempts, "now": now,
            "entities": list(entities), "corrs": list(correlation_ids),
        }).fetchall()
    data = json.dumps(list(zip(entities, correlation_ids, strict=True)))
    return raw.execute(_SQLITE_ENQUEUE,
                       (job_type, _dumps(payload), max_attempts, now, data)).fetchall()
