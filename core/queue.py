"""The queue: idempotent enqueue, fenced claims, lease upkeep, completions, reads.

Every function takes a `Database` and runs its own transaction(s). Every write a worker
makes about a job is conditional on `(id, lease_token, status='running')`, so a worker that
lost its lease changes nothing.
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    and_,
    delete,
    exists,
    false,
    func,
    literal,
    literal_column,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.sql import operators

from core import clock, hotpath
from core.db import Database, chunks
from core.hotpath import EndedAttempt
from core.models import (
    ACTIVE_STATUSES,
    DEAD,
    OUTCOME_LEASE_EXPIRED,
    OUTCOME_LEASE_LOST,
    OUTCOME_RELEASED,
    OUTCOME_RUNNING,
    PENDING,
    RUNNING,
    STATUSES,
    attempts_t,
    jobs_t,
    workers_t,
)
from core.records import Attempt, ClaimedJob, Completion, Job, WorkerInfo

MAX_ENTITY_ID_LENGTH = 128
_ACTIVE_WHERE = jobs_t.c.status.in_(ACTIVE_STATUSES)


class InvalidInput(ValueError):
    """Bad input from a person or a script; the message is one line."""


class DuplicateJob(Exception):
    def __init__(self, existing_id: int, job_type: str, entity_id: str) -> None:
        super().__init__(
            f"an active {job_type} job for {entity_id!r} already exists: job {existing_id}"
        )
        self.existing_id = existing_id


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
    chunk: int = 1000,
    run_at: float | None = None,
) -> list[EnqueueResult]:
    """Enqueue many entities of one type in few statements; idempotency is the index's.

    Every id is validated before anything is written, so bad input writes nothing.
    `run_at` (epoch seconds; default now) is when the new jobs become due.
    """
    if run_at is not None and not (0 <= run_at < 1e11):  # NaN fails both comparisons
        raise InvalidInput("run_at must be epoch seconds from 0 to 1e11")
    validate_job_type(job_type, known_types)
    ids = [validate_entity_id(e) for e in entity_ids]
    if correlation_id is not None and len(ids) > 1:
        raise InvalidInput("a correlation id can only be given for a single job")
    if correlation_id is not None and (not correlation_id or len(correlation_id) > 64):
        raise InvalidInput("correlation id must be 1 to 64 characters")
    if payload is not None:
        try:  # strict JSON (no NaN/Infinity) in valid UTF-8 (no lone surrogates)
            json.dumps(payload, allow_nan=False, ensure_ascii=False).encode()
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"payload is not strict JSON: {exc}") from None
    if correlation_id is not None:
        _reject_control_characters(correlation_id, "correlation id")
    results: dict[str, EnqueueResult] = {}
    unique = list(dict.fromkeys(ids))
    for attempt in range(5):
        todo = [e for e in unique if e not in results]
        if not todo:
            break
        now = clock.now()
        corrs = [correlation_id] if correlation_id is not None else new_correlation_ids(
            len(todo))
        with db.write() as conn:
            # Every chunk's INSERT goes out before the first answer is read (a pipeline on
            # PostgreSQL), so the server inserts one chunk while we prepare the next.
            for job_id, entity in hotpath.insert_jobs(
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
        if attempt == 4 and len(results) < len(unique):
            raise RuntimeError("enqueue could not settle against concurrent writers")
    return [results[e] for e in ids]


# --- the worker's side ------------------------------------------------------------------------

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
        return hotpath.claim(conn, db.is_postgres, worker_id, limit, now, lease_seconds,
                             job_types)


def renew_leases(db: Database, worker_id: str, held: Mapping[int, int],
                 lease_seconds: float) -> set[int]:
    """Extend the leases this worker still holds; returns the ids it still holds."""
    if not held:
        return set()
    now = clock.now()
    stmt = (
        update(jobs_t)
        .where(
            tuple_(jobs_t.c.id, jobs_t.c.lease_token).in_(list(held.items())),
            jobs_t.c.status == RUNNING,
            jobs_t.c.lease_owner == worker_id,
        )
        .values(lease_expires_at=now + lease_seconds)
        .returning(jobs_t.c.id)
    )
    with db.write() as conn:
        return set(conn.execute(stmt).scalars())


def complete(db: Database, completions: Sequence[Completion]) -> list[bool]:
    """Write a batch of attempt results in one transaction; each is fenced on its own.

    Returns, per completion, whether it was applied. A fenced-out completion changes no job;
    its attempt is marked `lease_lost` (unless an operator already closed it as canceled).
    """
    if not completions:
        return []
    # One statement per batch on PostgreSQL, one read + executemany on SQLite; each row is
    # still conditional on (id, lease_token, status='running').
    with db.write() as conn:
        return hotpath.complete(conn, db.is_postgres, completions)


def abandon(db: Database, worker_id: str, lost: Mapping[int, tuple[int, float]],
            message: str) -> None:
    """Record attempts whose lease this worker found lost: {job_id: (token, started_at)}.
    It stops them and writes nothing else; an attempt someone else closed as `canceled`
    stays so, one recovery closed as `lease_expired` becomes `lease_lost`."""
    if not lost:
        return
    now = clock.now()
    with db.write() as conn:
        hotpath.close_attempts(conn, db.is_postgres, [
            EndedAttempt(job_id, token, worker_id, started, now, None, OUTCOME_LEASE_LOST,
                         "LeaseLost", message)
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
                .where(jobs_t.c.id == job_id, jobs_t.c.lease_token == token,
                       jobs_t.c.status == RUNNING, jobs_t.c.lease_owner == worker_id)
                .values(status=PENDING, attempt_count=jobs_t.c.attempt_count - 1,
                        lease_owner=None, lease_expires_at=None, next_run_at=now,
                        updated_at=now)
                .returning(jobs_t.c.lease_acquired_at)
            ).scalar()
            if started is not None:
                closed.append(EndedAttempt(
                    job_id, token, worker_id, started, now, None, OUTCOME_RELEASED,
                    "Released", "worker shut down before finishing; not counted"))
        hotpath.close_attempts(conn, db.is_postgres, closed)
        if closed:
            db.notify(conn)
    return len(closed)


def recover_expired(
    db: Database, *, backoff: Any = None, limit: int = 200
) -> list[tuple[int, str]]:
    """Return expired leases to the queue (or the dead letters when the budget is spent).

    The abandoned attempt is closed as `lease_expired` and counts against the budget, so a
    job that kills its worker every time ends `dead` instead of looping forever.
    """
    now = clock.now()
    # Running jobs are few (at most the workers' total concurrency), so the (status, id)
    # index finds them; a lease-expiry index would cost a write on every claim and turn
    # every lease renewal into a non-HOT update on PostgreSQL.
    candidates = (
        select(jobs_t.c.id, jobs_t.c.lease_token, jobs_t.c.attempt_count,
               jobs_t.c.max_attempts, jobs_t.c.lease_owner, jobs_t.c.lease_acquired_at)
        .where(jobs_t.c.status == RUNNING, jobs_t.c.lease_expires_at < now)
        .order_by(jobs_t.c.id)
        .limit(limit)
    )
    if db.is_postgres:
        candidates = candidates.with_for_update(skip_locked=True)
    recovered: list[tuple[int, str]] = []
    closed: list[EndedAttempt] = []
    with db.write() as conn:
        for job_id, token, count, max_attempts, owner, started in conn.execute(candidates):
            message = f"lease expired: worker {owner} stopped renewing it"
            if count >= max_attempts:
                values: dict[str, Any] = dict(
                    status=DEAD, finished_at=now, dead_error=message,
                    dead_error_type="LeaseExpired")
            else:
                delay = backoff(count) if backoff else 0.0
                values = dict(status=PENDING, next_run_at=now + delay)
            res = conn.execute(
                update(jobs_t)
                .where(jobs_t.c.id == job_id, jobs_t.c.lease_token == token,
                       jobs_t.c.status == RUNNING)
                .values(lease_owner=None, lease_expires_at=None, updated_at=now,
                        last_error=message, last_error_type="LeaseExpired", **values)
            )
            if res.rowcount != 1:
                continue
            closed.append(EndedAttempt(job_id, token, owner or "unknown", started or now, now,
                                       None, OUTCOME_LEASE_EXPIRED, "LeaseExpired", message))
            recovered.append((job_id, values["status"]))
        hotpath.close_attempts(conn, db.is_postgres, closed)
        if any(status == PENDING for _, status in recovered):
            db.notify(conn)
    return recovered


def is_drained(db: Database, job_types: Sequence[str] | None = None) -> bool:
    """True when no job (of these types) is pending, scheduled or running."""
    cond = [_ACTIVE_WHERE]
    if job_types is not None:
        cond.append(jobs_t.c.job_type.in_(job_types))
    with db.read() as conn:
        return not conn.execute(select(exists().where(*cond))).scalar()


# --- worker heartbeats ------------------------------------------------------------------------

def record_heartbeat(db: Database, info: WorkerInfo) -> None:
    values = info.to_dict(iso_times=False)
    with db.write() as conn:
        res = conn.execute(
            update(workers_t).where(workers_t.c.id == info.id).values(
                last_seen_at=info.last_seen_at, state=info.state, in_flight=info.in_flight,
                processed=info.processed, concurrency=info.concurrency)
        )
        if res.rowcount == 0:
            conn.execute(workers_t.insert().values(**values))


def list_workers(db: Database, *, limit: int = 200) -> list[WorkerInfo]:
    with db.read() as conn:
        rows = conn.execute(
            select(workers_t).order_by(workers_t.c.last_seen_at.desc()).limit(limit)
        ).all()
    return [WorkerInfo.from_row(r) for r in rows]


def prune_workers(db: Database, older_than: float) -> int:
    with db.write() as conn:
        return conn.execute(
            # Not seen for that long means gone, whether it stopped or was killed.
            delete(workers_t).where(workers_t.c.last_seen_at < older_than)
        ).rowcount


# --- reads ------------------------------------------------------------------------------------

_TOP = "\U0010ffff"  # sorts after every character under SQLite's byte-wise collation


# Literal, not bound: a partial index is used only when the query spells out its predicate.
_NOT_RUNNING = jobs_t.c.status != literal_column("'running'")
_RUNNING = jobs_t.c.status == literal_column("'running'")


@dataclass(slots=True)
class JobFilter:
    statuses: tuple[str, ...] = ()
    job_type: str | None = None
    search: str | None = None

    def conditions(self, *, prefix_ranges: bool = False,
                   split_running: bool = False) -> list[Any]:
        """WHERE conditions. With `prefix_ranges` (SQLite, whose text order is byte-wise),
        a prefix search is an index range (`x >= 'c_5' AND x < 'c_5' || U+10FFFF`) instead
        of LIKE, which SQLite would serve by a full scan (0.3 ms against 180 ms at 1M rows).
        PostgreSQL collations do not order text byte-wise, so it keeps LIKE."""
        cond: list[Any] = []
        if self.statuses:
            bad = [s for s in self.statuses if s not in STATUSES]
            if bad:
                raise InvalidInput(f"unknown status {bad[0]!r} (known: {', '.join(STATUSES)})")
            cond.append(jobs_t.c.status.in_(self.statuses))
        if self.job_type:
            cond.append(jobs_t.c.job_type == self.job_type)
        term = (self.search or "").strip()
        if not term:
            return cond
        if any(ch == "\x00" or "\ud800" <= ch <= "\udfff" for ch in term):
            # No stored id holds these and the drivers cannot send them: match nothing.
            cond.append(false())
            return cond
        c = jobs_t.c
        text_options: list[Any] = [c.entity_id == term, c.correlation_id == term]
        if prefix_ranges:
            text_options.append(and_(c.entity_id >= term, c.entity_id < term + _TOP))
            if len(term) >= 4:
                text_options.append(
                    and_(c.correlation_id >= term, c.correlation_id < term + _TOP))
        else:
            safe = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            text_options.append(c.entity_id.like(safe + "%", escape="\\"))
            if len(term) >= 4:
                text_options.append(c.correlation_id.like(safe + "%", escape="\\"))
        if split_running:
            # On PostgreSQL the entity and correlation indexes leave running jobs out
            # (migration 0005): each text match is asked of the jobs they hold (their
            # predicate spelled out, so the planner can use them) and, separately, of the
            # running jobs, which are few and found through (status, id).
            options: list[Any] = [and_(_NOT_RUNNING, o) for o in text_options]
            options.append(and_(_RUNNING, or_(*text_options)))
        else:
            options = text_options
        if term.isdigit() and len(term) < 18:
            options.append(c.id == int(term))
        cond.append(or_(*options))
        return cond

    def conditions_for(self, db: Database) -> list[Any]:
        return self.conditions(prefix_ranges=not db.is_postgres, split_running=db.is_postgres)


# "type" walks ix_sync_jobs_type_id backwards (job_type DESC, id DESC); job_type ASC with
# id DESC would sort every row in a temporary B-tree (550 ms at 1M rows).
SORTS = {
    "age": (jobs_t.c.id.desc(),),
    "oldest": (jobs_t.c.id.asc(),),
    "status": (jobs_t.c.status.asc(), jobs_t.c.id.desc()),
    "type": (jobs_t.c.job_type.desc(), jobs_t.c.id.desc()),
}


def sort_order(sort: str) -> tuple[Any, ...]:
    if sort not in SORTS:
        raise InvalidInput(f"unknown sort {sort!r} (known: {', '.join(SORTS)})")
    return SORTS[sort]


def list_jobs(db: Database, flt: JobFilter | None = None, *, limit: int = 50, offset: int = 0,
              sort: str = "age", from_end: bool = False) -> list[Job]:
    """A page of jobs in `sort` order. With `from_end`, `offset` counts from the end of
    the list: the same index walked from its other end, so the oldest jobs of a million
    cost what the newest do (no count, no skipping a million rows)."""
    flt = flt or JobFilter()
    order = sort_order(sort)
    if from_end:
        order = tuple(c.element.asc() if c.modifier is operators.desc_op else c.element.desc()
                      for c in order)
    stmt = select(jobs_t).where(*flt.conditions_for(db)).order_by(*order).limit(limit)
    if offset:
        stmt = stmt.offset(offset)
    with db.read() as conn:
        jobs = [Job.from_row(r) for r in conn.execute(stmt)]
    if from_end:
        jobs.reverse()
    return jobs


def count_jobs(db: Database, flt: JobFilter | None = None, *, cap: int | None = None,
               newer_than: int | None = None) -> int:
    """Rows matching the filter; with `cap`, counting stops there (cheap on huge tables);
    with `newer_than`, only jobs with a larger id (how far down a job sits, newest first)."""
    flt = flt or JobFilter()
    cond = flt.conditions_for(db)
    if newer_than is not None:
        cond.append(jobs_t.c.id > newer_than)
    inner = select(literal(1)).select_from(jobs_t).where(*cond)
    if cap is not None:
        inner = inner.limit(cap)
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(inner.subquery())).scalar() or 0)


def get_job(db: Database, job_id: int) -> Job | None:
    with db.read() as conn:
        row = conn.execute(select(jobs_t).where(jobs_t.c.id == job_id)).first()
    return Job.from_row(row) if row else None


def attempts_for(db: Database, job_id: int) -> list[Attempt]:
    """The job's attempts in order, the one in flight included (its row is written when it
    ends; until then the job's lease is the attempt, shown with id 0 and outcome
    `running`)."""
    j = jobs_t.c
    with db.read() as conn:
        # The lease first: if the attempt ends between the two reads, its row is there.
        lease = conn.execute(
            select(j.lease_token, j.lease_owner, j.lease_acquired_at)
            .where(j.id == job_id, j.status == RUNNING)
        ).first()
        rows = conn.execute(
            select(attempts_t).where(attempts_t.c.job_id == job_id)
            .order_by(attempts_t.c.number)
        ).all()
    attempts = [Attempt.from_row(r) for r in rows]
    if lease is not None and all(a.number != lease.lease_token for a in attempts):
        attempts.append(Attempt(
            id=0, job_id=job_id, number=lease.lease_token,
            worker_id=lease.lease_owner or "unknown",
            started_at=lease.lease_acquired_at or 0.0, finished_at=None, duration_ms=None,
            outcome=OUTCOME_RUNNING, error_type=None, error_message=None, http_status=None))
    return attempts


def replays_of(db: Database, job_id: int) -> list[int]:
    with db.read() as conn:
        return list(conn.execute(
            select(jobs_t.c.id).where(jobs_t.c.replay_of_job_id == job_id).order_by(jobs_t.c.id)
        ).scalars())
