"""The attempt row: how an attempt that ended is recorded in the attempt history.

The attempt in flight has no row: while a job is running its lease columns (owner, token,
acquired at) are that attempt, and its row is inserted once, when it ends. Completions
write theirs in the completion statement (core.completion); every other ending (lease
lost or expired, released, canceled) goes through `close_attempts`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import Connection

from core.db import raw_connection
from core.statuses import AttemptOutcome

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
_LEASE_LOST = {pg: _upsert_attempt(pg, (AttemptOutcome.LEASE_EXPIRED,)) for pg in (True, False)}
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
    expired, released, canceled); with `lease_lost`, only over a `lease_expired` row."""
    if not rows:
        return
    sql = (_LEASE_LOST if lease_lost else _CLOSE)[is_postgres]
    raw = raw_connection(conn)
    if is_postgres:
        with raw.cursor() as cur:
            cur.executemany(sql, rows)
    else:
        raw.executemany(sql, rows)
