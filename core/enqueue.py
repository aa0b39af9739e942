"""Enqueue: validating what a person or a script asks for, and inserting pending jobs.

Idempotency lives in the database: the partial unique index `uq_sync_jobs_active_entity`
allows one active (pending or running) job per job type and entity, so a duplicate
enqueue inserts nothing and answers with the active job's id. A bulk enqueue inserts
through one fixed driver statement per chunk (arrays through `unnest` on PostgreSQL, one
JSON parameter on SQLite), pipelined on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from core import clock
from core.db import Database, chunks, dumps_json, pipeline, raw_connection
from core.errors import InvalidInput
from core.models import CORRELATION_ID_LENGTH, ENTITY_ID_LENGTH, jobs_t
from core.statuses import ACTIVE_STATUSES

MAX_ENTITY_ID_LENGTH = ENTITY_ID_LENGTH
MAX_CORRELATION_ID_LENGTH = CORRELATION_ID_LENGTH
# Entities per INSERT statement (and per read of the ones an active job already holds).
ENQUEUE_CHUNK = 1000
# An entity whose active job finishes between our insert (skipped: a duplicate) and our
# read (no active job found) is inserted again in the next round; after this many rounds
# the enqueue gives up.
SETTLE_ROUNDS = 5

_ACTIVE_WHERE = jobs_t.c.status.in_(ACTIVE_STATUSES)


@dataclass(slots=True)
class EnqueueResult:
    job_id: int
    created: bool
    entity_id: str


def validate_entity_id(entity_id: object) -> str:
    if not isinstance(entity_id, str):
        raise InvalidInput("entity id must be text")
    if not entity_id or not entity_id.strip():
        raise InvalidInput("entity id must not be empty")
    if len(entity_id) > MAX_ENTITY_ID_LENGTH:
        raise InvalidInput(f"entity id is longer than {MAX_ENTITY_ID_LENGTH} characters")
    if entity_id != entity_id.strip():
        raise InvalidInput("entity id must not start or end with white space")
    _reject_control_characters(entity_id, "entity id")
    return entity_id


_CONTROL_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


def _reject_control_characters(text: str, what: str) -> None:
    # Stored as text, shown to operators and sent in HTTP paths and headers: no control or
    # format characters, and no lone surrogates (a surrogate stored through SQLite's JSON
    # path made the row unreadable).
    if text.isascii() and text.isprintable():  # the common case, checked in C
        return
    for ch in text:
        if unicodedata.category(ch) in _CONTROL_CATEGORIES:
            raise InvalidInput(f"{what} contains a control character (U+{ord(ch):04X})")


def validate_job_type(job_type: object, known: Iterable[str]) -> str:
    known = list(known)
    if not isinstance(job_type, str) or job_type not in known:
        raise InvalidInput(f"unknown job type {job_type!r} (known: {', '.join(known)})")
    return job_type


# Later than any date a person means (year 5138), early enough for a float's precision.
MAX_RUN_AT = 1e11


def new_correlation_ids(n: int) -> list[str]:
    """n random 128-bit ids as 32 hex digits (the shape of a uuid4's hex), from one read of
    the OS's random source: a bulk enqueue needs thousands."""
    digits = os.urandom(16 * n).hex()
    return [digits[i:i + 32] for i in range(0, 32 * n, 32)]


def new_correlation_id() -> str:
    return new_correlation_ids(1)[0]


def enqueue(
    db: Database,
    job_type: str,
    entity_id: str,
    *,
    known_types: Iterable[str],
    max_attempts: int,
    payload: dict[str, Any] | None = None,
    correlation_id: str | None = None,
    run_at: float | None = None,
) -> EnqueueResult:
    """Enqueue one job; a duplicate of an active job answers with that job's id."""
    return enqueue_many(db, job_type, [entity_id], known_types=known_types,
                        max_attempts=max_attempts, payload=payload,
                        correlation_id=correlation_id, run_at=run_at)[0]


def enqueue_many(
    db: Database,
    job_type: str,
    entity_ids: Sequence[str],
    *,
    known_types: Iterable[str],
    max_attempts: int,
    payload: dict[str, Any] | None = None,
    correlation_id: str | None = None,
    chunk: int = ENQUEUE_CHUNK,
    run_at: float | None = None,
) -> list[EnqueueResult]:
    """Enqueue many entities of one type in few statements; idempotency is the index's.

    Every id is validated before anything is written, so bad input writes nothing.
    `run_at` (epoch seconds; default now) is when the new jobs become due.
    """
    if run_at is not None and not (0 <= run_at < MAX_RUN_AT):  # NaN fails both comparisons
        raise InvalidInput(f"run_at must be epoch seconds from 0 to {MAX_RUN_AT:.0e}")
    validate_job_type(job_type, known_types)
    ids = [validate_entity_id(e) for e in entity_ids]
    if correlation_id is not None and len(ids) > 1:
        raise InvalidInput("a correlation id can only be given for a single job")
    if correlation_id is not None and (
            not correlation_id or len(correlation_id) > MAX_CORRELATION_ID_LENGTH):
        raise InvalidInput(
            f"correlation id must be 1 to {MAX_CORRELATION_ID_LENGTH} characters")
    if payload is not None:
        try:  # strict JSON (no NaN/Infinity) in valid UTF-8 (no lone surrogates)
            json.dumps(payload, allow_nan=False, ensure_ascii=False).encode()
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"payload is not strict JSON: {exc}") from None
    if correlation_id is not None:
        _reject_control_characters(correlation_id, "correlation id")
    results: dict[str, EnqueueResult] = {}
    unique = list(dict.fromkeys(ids))
    for attempt in range(SETTLE_ROUNDS):
        todo = [e for e in unique if e not in results]
        if not todo:
            break
        now = clock.now()
        corrs = [correlation_id] if correlation_id is not None else new_correlation_ids(
            len(todo))
        with db.write() as conn:
            # Every chunk's INSERT goes out before the first answer is read (a pipeline on
            # PostgreSQL), so the server inserts one chunk while we prepare the next.
            for job_id, entity in insert_jobs(
                    conn, db.is_postgres, job_type, list(chunks(todo, chunk)),
                    list(chunks(corrs, chunk)), payload, max_attempts, now, run_at):
                results[entity] = EnqueueResult(job_id, True, entity)
            for part in chunks([e for e in todo if e not in results], chunk):
                existing = conn.execute(
                    select(jobs_t.c.id, jobs_t.c.entity_id).where(
                        jobs_t.c.job_type == job_type,
                        jobs_t.c.entity_id.in_(part),
                        _ACTIVE_WHERE,
                    )
                )
                for job_id, entity in existing:
                    results[entity] = EnqueueResult(job_id, False, entity)
            if any(r.created for r in results.values()):
                db.notify(conn)
        # Anything still missing collided with a job that finished between our insert and
        # our read; the next round inserts it afresh.
        if attempt == SETTLE_ROUNDS - 1 and len(results) < len(unique):
            raise RuntimeError("enqueue could not settle against concurrent writers")
    return [results[e] for e in ids]


# --- driver SQL -----------------------------------------------------------------------------

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
    ones. On PostgreSQL every chunk is sent before any answer is read (a pipeline)."""
    raw = raw_connection(conn)
    body = dumps_json(payload)
    if is_postgres:
        with pipeline(conn):
            cursors = [raw.execute(_PG_ENQUEUE, {
                "type": job_type, "payload": body, "max": max_attempts, "now": now,
                "run": now if run_at is None else run_at,
                "entities": list(entities), "corrs": list(corrs),
            }) for entities, corrs in zip(entity_chunks, correlation_chunks, strict=True)]
        return [row for cur in cursors for row in cur.fetchall()]
    rows: list[tuple[int, str]] = []
    for entities, corrs in zip(entity_chunks, correlation_chunks, strict=True):
        data = json.dumps(list(zip(entities, corrs, strict=True)))
        rows += raw.execute(_SQLITE_ENQUEUE,
                            (job_type, body, max_attempts, now, data,
                             now if run_at is None else run_at)).fetchall()
    return rows
