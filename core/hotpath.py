"""The worker's hot path in driver SQL: claim, complete and bulk enqueue.

`core.queue` keeps the contract (and the readable SQLAlchemy reads); this module is how the
three statements a busy worker repeats thousands of times a second are written:

- the SQL text is fixed whatever the batch size (PostgreSQL takes a batch as arrays through
  `unnest`, SQLite as `executemany` or one JSON parameter), so it is parsed and planned once
  per connection (psycopg prepares it; sqlite3 caches it) and SQLAlchemy compiles nothing;
- a claim is one statement and writes only the job rows: the attempt in flight is the job's
  lease (owner, token, acquired at), and its row is written once, when it ends;
- a batch of completions (job updates and attempt rows) is one statement on PostgreSQL, and
  on SQLite one read plus `executemany` under the write lock `BEGIN IMMEDIATE` already holds.

Fencing is unchanged: every job write is conditional on `(id, lease_token,
status='running')`, checked per job inside the statement; a completion whose condition
does not hold changes no job, and its attempt is marked `lease_lost`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

from sqlalchemy import Connection

from core.db import chunks
from core.models import OUTCOME_LEASE_EXPIRED, OUTCOME_LEASE_LOST
from core.records import ClaimedJob, Completion

# Job status written by each completion outcome.
_STATUS_FOR = {"success": "success", "retry": "pending", "dead": "dead", "failed": "failed"}


def _raw(conn: Connection) -> Any:
    """The DBAPI connection under a SQLAlchemy connection, inside its open transaction."""
    return conn.connection.driver_connection


@contextmanager
def _pipeline(conn: Connection) -> Iterator[None]:
    """psycopg's pipeline mode on the connection, which is dropped if the pipeline breaks:
    a pipeline cut mid-flight (the server terminated the backend, the network went) leaves
    psycopg unable to roll the connection back, and SQLAlchemy's attempt to would raise
    (and log a traceback) on top of the error that matters."""
    try:
        with _raw(conn).pipeline():
            yield
    except Exception:
        conn.invalidate()
        raise


def _dumps(value: Any) -> str:
    # The same text SQLAlchemy's JSON type writes (None is stored as JSON null).
    return json.dumps(value)


def _result_json(c: Completion) -> str | None:
    if c.outcome != "success":
        return None
    return "null" if c.result is None else _dumps(c.result)


def _loads(value: Any) -> Any:
    # Payloads come back as text (most are JSON null: no parse for those).
    if value is None or value == "null":
        return None
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
    RETURNING j.id, j.job_type, j.entity_id, j.payload::text, j.correlation_id,
              j.attempt_count, j.max_attempts, j.lease_token
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


def claim(conn: Connection, is_postgres: bool, worker_id: str, limit: int, now: float,
          lease_seconds: float, job_types: Sequence[str]) -> list[ClaimedJob]:
    """Lease up to `limit` due jobs. No attempt row is written here: while the lease is held
    the job row's lease columns (owner, token, acquired at) are the attempt in flight, and
    the row is written once, when the attempt ends (see `close_attempts`)."""
    raw = _raw(conn)
    if is_postgres:
        # Pipelined: the plan settings and the claim travel in one round trip.
        with _pipeline(conn):
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
    jobs = [ClaimedJob(r[0], r[1], r[2], _loads(r[3]), r[4], r[5], r[6], r[7], now)
            for r in rows]
    jobs.sort(key=lambda j: j.id)
    return jobs


# --- complete ---------------------------------------------------------------------------------
#
# One array per field, one element per completion of one worker (the worker id is a
# scalar); the job's status follows from the outcome (_STATUS_FOR, spelled out in SQL).
# Which job columns a completion writes depends on its outcome: success sets the result and
# finished_at; retry sets next_run_at and last_error*; dead sets finished_at, last_error* and
# dead_error*; failed sets finished_at and last_error*. The attempt row is inserted by the
# same statement, for the jobs whose fence held.

# The job status each outcome leads to, as SQL (from _STATUS_FOR).
_STATUS_CASES = " ".join(f"WHEN '{o}' THEN '{st}'" for o, st in _STATUS_FOR.items())

_PG_COMPLETE = f"""
WITH v AS (
    SELECT * FROM unnest(%(id)b::int[], %(tok)b::int[], %(outcome)b::text[], %(fin)b::float8[],
                         %(dur)b::float8[], %(http)b::int[], %(res)b::text[],
                         %(err_t)b::text[], %(err_m)b::text[], %(nxt)b::float8[],
                         %(started)b::float8[])
        AS v(id, tok, outcome, fin, dur, http, res, err_t, err_m, nxt, started)
), done AS (
    UPDATE sync_jobs AS j SET
        status = CASE v.outcome {_STATUS_CASES} END,
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
    INSERT INTO sync_job_attempts AS a (job_id, number, worker_id, started_at, finished_at,
                                        duration_ms, outcome, error_type, error_message,
                                        http_status)
    SELECT v.id, v.tok, %(wid)s, v.started, v.fin, v.dur, v.outcome, v.err_t, v.err_m, v.http
    FROM v JOIN done ON done.id = v.id
    ON CONFLICT (job_id, number) DO UPDATE SET
        outcome = excluded.outcome, finished_at = excluded.finished_at,
        duration_ms = excluded.duration_ms, error_type = excluded.error_type,
        error_message = excluded.error_message, http_status = excluded.http_status
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

# Attempt rows: one statement for every way an attempt ends. A conflict means a row for
# this (job, number) already exists; `overwrite` says which outcomes may be replaced (a late
# result turns `lease_expired` into `lease_lost`, but never rewrites `canceled`).
_ATTEMPT_COLUMNS = ("job_id, number, worker_id, started_at, finished_at, duration_ms, "
                    "outcome, error_type, error_message, http_status")
_ATTEMPT_UPDATE = ("outcome = excluded.outcome, finished_at = excluded.finished_at, "
                   "duration_ms = excluded.duration_ms, error_type = excluded.error_type, "
                   "error_message = excluded.error_message, "
                   "http_status = excluded.http_status")


def _upsert_attempt(is_postgres: bool, overwrite: Sequence[str] | None) -> str:
    mark = "%s" if is_postgres else "?"
    sql = (f"INSERT INTO sync_job_attempts AS a ({_ATTEMPT_COLUMNS}) "
           f"VALUES ({', '.join([mark] * 10)}) "
           f"ON CONFLICT (job_id, number) DO UPDATE SET {_ATTEMPT_UPDATE}")
    if overwrite is not None:
        sql += " WHERE a.outcome IN ({})".format(", ".join(f"'{o}'" for o in overwrite))
    return sql


# A fenced-out result: the attempt it belongs to was closed by someone else (lease recovery
# wrote `lease_expired`; a cancel wrote `canceled`). Only `lease_expired` becomes
# `lease_lost`; with no row at all, the lost attempt is recorded as such.
_LEASE_LOST = {pg: _upsert_attempt(pg, (OUTCOME_LEASE_EXPIRED,)) for pg in (True, False)}
_CLOSE = {pg: _upsert_attempt(pg, None) for pg in (True, False)}


class EndedAttempt(NamedTuple):
    """One attempt row, in the column order of the statements above."""

    job_id: int
    number: int
    worker_id: str
    started_at: float
    finished_at: float
    duration_ms: float | None
    outcome: str
    error_type: str | None
    error_message: str | None
    http_status: int | None = None


def close_attempts(conn: Connection, is_postgres: bool, rows: Sequence[EndedAttempt], *,
                   lease_lost: bool = False) -> None:
    """Write the rows of attempts that ended outside a completion batch (lease lost or
    expired, released, canceled)."""
    if not rows:
        return
    sql = (_LEASE_LOST if lease_lost else _CLOSE)[is_postgres]
    raw = _raw(conn)
    if is_postgres:
        with raw.cursor() as cur:
            cur.executemany(sql, rows)
    else:
        raw.executemany(sql, rows)


def complete(conn: Connection, is_postgres: bool,
             completions: Sequence[Completion]) -> list[bool]:
    for c in completions:
        if c.outcome not in _STATUS_FOR:
            raise ValueError(f"not a completion outcome: {c.outcome}")
    raw = _raw(conn)
    if is_postgres:
        by_worker: dict[str, list[Completion]] = {}
        for c in completions:
            by_worker.setdefault(c.worker_id, []).append(c)
        applied_ids = set()
        for worker_id, group in by_worker.items():  # one group but in tests
            params = {
                "wid": worker_id, "id": [c.job_id for c in group],
                "tok": [c.lease_token for c in group], "outcome": [c.outcome for c in group],
                "fin": [c.finished_at for c in group], "dur": [c.duration_ms for c in group],
                "http": [c.http_status for c in group],
                "res": [_result_json(c) for c in group],
                "err_t": [c.error_type for c in group],
                "err_m": [c.error_message for c in group],
                "nxt": [c.next_run_at for c in group],
                "started": [c.started_at for c in group],
            }
            applied_ids.update(r[0] for r in raw.execute(_PG_COMPLETE, params).fetchall())
    else:
        ids = list(dict.fromkeys(c.job_id for c in completions))
        current = {}
        for part in chunks(ids, 500):
            sql = _SQLITE_FENCE_READ.format(",".join("?" * len(part)))
            for job_id, token, status in raw.execute(sql, part):
                current[job_id] = (token, status)
        # We hold the write lock (BEGIN IMMEDIATE), so what we just read is what the
        # conditional UPDATE below will see; the condition stays in its WHERE regardless.
        held = [c for c in completions if current.get(c.job_id) == (c.lease_token, "running")]
        applied_ids = {c.job_id for c in held}
        if held:
            cur = raw.executemany(_SQLITE_COMPLETE, [
                (c.job_id, _STATUS_FOR[c.outcome], c.outcome, c.finished_at, c.duration_ms,
                 c.http_status, _result_json(c),
                 c.error_type, c.error_message, c.next_run_at, c.lease_token)
                for c in held])
            if cur.rowcount != len(held):  # pragma: no cover - a duplicate in the batch
                raise RuntimeError("completion batch changed under the write lock")
            close_attempts(conn, False, [_ended(c, c.outcome, c.error_type, c.error_message)
                                         for c in held])
    applied = [c.job_id in applied_ids for c in completions]
    close_attempts(conn, is_postgres, [
        _ended(c, OUTCOME_LEASE_LOST, "LeaseLost",
               f"late result ({c.outcome}) discarded: lease lost")
        for c, ok in zip(completions, applied, strict=True) if not ok], lease_lost=True)
    return applied


def _ended(c: Completion, outcome: str, error_type: str | None,
           message: str | None) -> EndedAttempt:
    return EndedAttempt(c.job_id, c.lease_token, c.worker_id, c.started_at, c.finished_at,
                        c.duration_ms, outcome, error_type, message, c.http_status)


# --- bulk enqueue -----------------------------------------------------------------------------

_PG_ENQUEUE = """
INSERT INTO sync_jobs (job_type, entity_id, status, payload, correlation_id, attempt_count,
                       max_attempts, next_run_at, lease_token, is_replay, created_at, updated_at)
SELECT %(type)s, u.e, 'pending', %(payload)s::json, u.c, 0, %(max)s, %(run)s, 0, false,
       %(now)s, %(now)s
FROM unnest(%(entities)b::text[], %(corrs)b::text[]) AS u(e, c)
ON CONFLICT (job_type, entity_id) WHERE status IN ('pending', 'running') DO NOTHING
RETURNING id, entity_id
"""

_SQLITE_ENQUEUE = """
INSERT INTO sync_jobs (job_type, entity_id, status, payload, correlation_id, attempt_count,
                       max_attempts, next_run_at, lease_token, is_replay, created_at, updated_at)
SELECT ?1, json_extract(u.value, '$[0]'), 'pending', ?2, json_extract(u.value, '$[1]'), 0, ?3,
       ?6, 0, 0, ?4, ?4
FROM json_each(?5) AS u WHERE true
ON CONFLICT (job_type, entity_id) WHERE status IN ('pending', 'running') DO NOTHING
RETURNING id, entity_id
"""


def insert_jobs(conn: Connection, is_postgres: bool, job_type: str,
                entity_chunks: Sequence[Sequence[str]],
                correlation_chunks: Sequence[Sequence[str]],
                payload: dict[str, Any] | None, max_attempts: int,
                now: float, run_at: float | None = None) -> list[tuple[int, str]]:
    """Insert pending jobs, one statement per chunk; the ones an active job already holds
    are skipped (the partial unique index decides). Returns (id, entity_id) of the inserted
    ones. On PostgreSQL every chunk is sent before any answer is read (a pipeline).
    `run_at` (default `now`) is when the jobs become due."""
    raw = _raw(conn)
    body = _dumps(payload)
    run = now if run_at is None else run_at
    if is_postgres:
        with _pipeline(conn):
            cursors = [raw.execute(_PG_ENQUEUE, {
                "type": job_type, "payload": body, "max": max_attempts, "now": now, "run": run,
                "entities": list(entities), "corrs": list(corrs),
            }) for entities, corrs in zip(entity_chunks, correlation_chunks, strict=True)]
        return [row for cur in cursors for row in cur.fetchall()]
    rows: list[tuple[int, str]] = []
    for entities, corrs in zip(entity_chunks, correlation_chunks, strict=True):
        data = json.dumps(list(zip(entities, corrs, strict=True)))
        rows += raw.execute(_SQLITE_ENQUEUE,
                            (job_type, body, max_attempts, now, data, run)).fetchall()
    return rows
