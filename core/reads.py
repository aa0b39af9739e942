"""Reads: the questions the faces (command line, console, scripts) ask about jobs, their
attempts and replays. Nothing here writes.

The job window is `list_jobs` / `count_jobs`: index walks that stay cheap at a million
rows, from either end of the list (see `JobFilter.conditions` and `SORTS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    and_,
    exists,
    false,
    func,
    literal,
    literal_column,
    or_,
    select,
)
from sqlalchemy.sql import operators

from core.db import Database
from core.errors import InvalidInput
from core.models import attempts_t, jobs_t
from core.records import Attempt, Job
from core.statuses import ACTIVE_STATUSES, STATUSES, AttemptOutcome, JobStatus

_ACTIVE_WHERE = jobs_t.c.status.in_(ACTIVE_STATUSES)

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
        of LIKE, which SQLite would serve by a full scan of the table.
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
# id DESC would sort every row in a temporary B-tree.
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
            .where(j.id == job_id, j.status == JobStatus.RUNNING)
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
            outcome=AttemptOutcome.RUNNING, error_type=None, error_message=None, http_status=None))
    return attempts


def replays_of(db: Database, job_id: int) -> list[int]:
    with db.read() as conn:
        return list(conn.execute(
            select(jobs_t.c.id).where(jobs_t.c.replay_of_job_id == job_id).order_by(jobs_t.c.id)
        ).scalars())


def is_drained(db: Database, job_types: Sequence[str] | None = None) -> bool:
    """True when no job (of these types) is pending, scheduled or running."""
    cond = [_ACTIVE_WHERE]
    if job_types is not None:
        cond.append(jobs_t.c.job_type.in_(job_types))
    with db.read() as conn:
        return not conn.execute(select(exists().where(*cond))).scalar()


# --- the console's extra questions ----------------------------------------------------------

def finished_since(db: Database, since: float) -> int:
    """Jobs that reached a final status at or after `since` (ix_sync_jobs_finished_at): the
    console's jobs/s when the workers run elsewhere."""
    with db.read() as conn:
        return int(conn.execute(
            select(func.count()).select_from(jobs_t).where(jobs_t.c.finished_at >= since)
        ).scalar() or 0)


def job_ids(db: Database, flt: JobFilter, *, sort: str = "age", limit: int = 10_000) -> list[int]:
    """Ids of the jobs matching a filter, in list order, without loading whole rows
    ("mark everything matching the filter")."""
    stmt = (select(jobs_t.c.id).where(*flt.conditions_for(db)).order_by(*sort_order(sort))
            .limit(limit))
    with db.read() as conn:
        return [int(i) for i in conn.execute(stmt).scalars()]


def attempt_number(db: Database, attempt_id: int) -> int | None:
    """The number (1, 2, …) of an attempt row: what a replay link shows an operator."""
    with db.read() as conn:
        return conn.execute(
            select(attempts_t.c.number).where(attempts_t.c.id == attempt_id)
        ).scalar()


def latest_replays(db: Database, job_ids: Sequence[int]) -> dict[int, int]:
    """For each of these jobs that was replayed, the id of its newest replay
    (ix_sync_jobs_replay_of): the dead-letter pane shows which ones are handled."""
    if not job_ids:
        return {}
    with db.read() as conn:
        rows = conn.execute(
            select(jobs_t.c.replay_of_job_id, func.max(jobs_t.c.id))
            .where(jobs_t.c.replay_of_job_id.in_(list(job_ids)))
            .group_by(jobs_t.c.replay_of_job_id)
        ).all()
    return {int(origin): int(newest) for origin, newest in rows}
