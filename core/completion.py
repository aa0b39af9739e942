"""Completions: writing the results of finished attempts, a batch at a time, each fenced
on its own (core.leases).

A batch is one statement on PostgreSQL (job updates and attempt rows together, arrays
through `unnest`), and on SQLite one read plus `executemany` under the write lock
`BEGIN IMMEDIATE` already holds; the SQL text is fixed whatever the batch size. A
completion whose fence does not hold changes no job, and its attempt is marked
`lease_lost`.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection

from core.attempts import EndedAttempt, close_attempts
from core.db import Database, chunks, dumps_json, raw_connection
from core.leases import fence_sql, holds_fence
from core.records import Completion
from core.statuses import AttemptOutcome, JobStatus

# Job status written by each completion outcome.
_STATUS_FOR: dict[str, JobStatus] = {
    AttemptOutcome.SUCCESS: JobStatus.SUCCESS,
    AttemptOutcome.RETRY: JobStatus.PENDING,
    AttemptOutcome.DEAD: JobStatus.DEAD,
    AttemptOutcome.FAILED: JobStatus.FAILED,
}

# SQLite binds at most this many parameters in one statement on old builds (999): the fence
# read asks for the batch's jobs in parts of this size.
SQLITE_IN_CHUNK = 500


def _result_json(c: Completion) -> str | None:
    if c.outcome != AttemptOutcome.SUCCESS:
        return None
    return "null" if c.result is None else dumps_json(c.result)


# One array per field, one element per completion of one worker (the worker id is a
# scalar); the job's status follows from the outcome (_STATUS_FOR, spelled out in SQL).
# Which job columns a completion writes depends on its outcome: success sets the result and
# finished_at; retry sets next_run_at and last_error*; dead sets finished_at, last_error* and
# dead_error*; failed sets finished_at and last_error*. The attempt row is inserted by the
# same statement, for the jobs whose fence held, with the attempt's own outcome when it has
# one (`timeout`, whose job still goes to retry or dead), else the completion's.

# The job status each outcome leads to, as SQL (from _STATUS_FOR).
_STATUS_CASES = " ".join(f"WHEN '{o}' THEN '{st}'" for o, st in _STATUS_FOR.items())

_PG_COMPLETE = f"""
WITH v AS (
    SELECT * FROM unnest(%(id)b::int[], %(tok)b::int[], %(outcome)b::text[], %(fin)b::float8[],
                         %(dur)b::float8[], %(http)b::int[], %(res)b::text[],
                         %(err_t)b::text[], %(err_m)b::text[], %(nxt)b::float8[],
                         %(started)b::float8[], %(aout)b::text[])
        AS v(id, tok, outcome, fin, dur, http, res, err_t, err_m, nxt, started, aout)
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
    WHERE {fence_sql("v.id", "v.tok", table="j")}
    RETURNING j.id
), closed AS (
    INSERT INTO sync_job_attempts AS a (job_id, number, worker_id, started_at, finished_at,
                                        duration_ms, outcome, error_type, error_message,
                                        http_status)
    SELECT v.id, v.tok, %(wid)s, v.started, v.fin, v.dur, COALESCE(v.aout, v.outcome), v.err_t,
           v.err_m, v.http
    FROM v JOIN done ON done.id = v.id
    ON CONFLICT (job_id, number) DO UPDATE SET
        outcome = excluded.outcome, finished_at = excluded.finished_at,
        duration_ms = excluded.duration_ms, error_type = excluded.error_type,
        error_message = excluded.error_message, http_status = excluded.http_status
)
SELECT id FROM done
"""

_SQLITE_FENCE_READ = "SELECT id, lease_token, status FROM sync_jobs WHERE id IN ({})"

_SQLITE_COMPLETE = f"""
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
WHERE {fence_sql("?1", "?11")}
"""


def complete_rows(conn: Connection, is_postgres: bool,
                  completions: Sequence[Completion]) -> list[bool]:
    """The completion statements, inside the caller's transaction (driver SQL)."""
    for c in completions:
        if c.outcome not in _STATUS_FOR:
            raise ValueError(f"not a completion outcome: {c.outcome}")
    raw = raw_connection(conn)
    if is_postgres:
        by_worker: dict[str, list[Completion]] = {}
        for c in completions:
            by_worker.setdefault(c.worker_id, []).append(c)
        applied_ids: set[int] = set()
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
                "aout": [c.attempt_outcome for c in group],
            }
            applied_ids.update(r[0] for r in raw.execute(_PG_COMPLETE, params).fetchall())
    else:
        ids = list(dict.fromkeys(c.job_id for c in completions))
        current: dict[int, tuple[int, str]] = {}
        for part in chunks(ids, SQLITE_IN_CHUNK):
            sql = _SQLITE_FENCE_READ.format(",".join("?" * len(part)))
            for job_id, token, status in raw.execute(sql, part):
                current[job_id] = (token, status)
        # We hold the write lock (BEGIN IMMEDIATE), so what we just read is what the
        # conditional UPDATE below will see; the condition stays in its WHERE regardless.
        held = [c for c in completions if holds_fence(current.get(c.job_id), c.lease_token)]
        applied_ids = {c.job_id for c in held}
        if held:
            cur = raw.executemany(_SQLITE_COMPLETE, [
                (c.job_id, _STATUS_FOR[c.outcome], c.outcome, c.finished_at, c.duration_ms,
                 c.http_status, _result_json(c),
                 c.error_type, c.error_message, c.next_run_at, c.lease_token)
                for c in held])
            if cur.rowcount != len(held):  # pragma: no cover - a duplicate in the batch
                raise RuntimeError("completion batch changed under the write lock")
            close_attempts(conn, False, [
                _ended(c, c.attempt_outcome or c.outcome, c.error_type, c.error_message)
                for c in held])
    applied = [c.job_id in applied_ids for c in completions]
    close_attempts(conn, is_postgres, [
        _ended(c, AttemptOutcome.LEASE_LOST, "LeaseLost",
               f"late result ({c.outcome}) discarded: lease lost")
        for c, ok in zip(completions, applied, strict=True) if not ok], lease_lost=True)
    return applied


def _ended(c: Completion, outcome: str, error_type: str | None,
           message: str | None) -> EndedAttempt:
    return EndedAttempt(c.job_id, c.lease_token, c.worker_id, c.started_at, c.finished_at,
                        c.duration_ms, outcome, error_type, message, c.http_status)


def complete(db: Database, completions: Sequence[Completion]) -> list[bool]:
    """Write a batch of attempt results in one transaction; each is fenced on its own.

    Returns, per completion, whether it was applied. A fenced-out completion changes no job;
    its attempt is marked `lease_lost` (unless an operator already closed it as canceled).
    """
    if not completions:
        return []
    with db.write() as conn:
        return complete_rows(conn, db.is_postgres, completions)
