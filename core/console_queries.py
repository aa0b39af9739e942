"""Read queries shaped for the console's live views (no Textual, no Rich here).

core.queue.list_jobs serves scripts well, but a console polling every second over a
million jobs needs every query to be an index walk:
- a prefix search is a range on the entity / correlation index (`x >= 'c_5' AND
  x < 'c_5' || U+10FFFF`), which SQLite serves as a MULTI-INDEX OR; LIKE 'c_5%' is a full
  scan there (0.3 ms against 180 ms at 1M rows). On PostgreSQL, whose collations do not
  order text byte-wise, core's LIKE conditions are kept.
- sort "type" is job_type DESC, id DESC, a backward walk of ix_sync_jobs_type_id; ASC then
  id DESC would sort a temporary B-tree of every row (550 ms at 1M rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, func, literal, or_, select

from core.db import Database
from core.models import STATUSES, attempts_t, jobs_t
from core.queue import InvalidInput, JobFilter
from core.records import Job

_TOP = "\U0010ffff"  # sorts after every character under SQLite's byte-wise collation
SORTS = {
    "age": (jobs_t.c.id.desc(),),
    "oldest": (jobs_t.c.id.asc(),),
    "status": (jobs_t.c.status.asc(), jobs_t.c.id.desc()),
    "type": (jobs_t.c.job_type.desc(), jobs_t.c.id.desc()),
}


def conditions(db: Database, flt: JobFilter) -> list[Any]:
    if db.is_postgres or not (flt.search and flt.search.strip()):
        return flt.conditions()
    cond: list[Any] = []
    if flt.statuses:
        bad = [s for s in flt.statuses if s not in STATUSES]
        if bad:
            raise InvalidInput(f"unknown status {bad[0]!r}")
        cond.append(jobs_t.c.status.in_(flt.statuses))
    if flt.job_type:
        cond.append(jobs_t.c.job_type == flt.job_type)
    term = flt.search.strip()
    c = jobs_t.c
    options = [and_(c.entity_id >= term, c.entity_id < term + _TOP)]
    if len(term) >= 4:
        options.append(and_(c.correlation_id >= term, c.correlation_id < term + _TOP))
    else:
        options.append(c.correlation_id == term)
    if term.isdigit() and len(term) < 18:
        options.append(c.id == int(term))
    cond.append(or_(*options))
    return cond


def _sort(sort: str) -> tuple[Any, ...]:
    if sort not in SORTS:
        raise InvalidInput(f"unknown sort {sort!r} (known: {', '.join(SORTS)})")
    return SORTS[sort]


def list_window(db: Database, flt: JobFilter, *, limit: int, offset: int = 0,
                sort: str = "age") -> list[Job]:
    stmt = select(jobs_t).where(*conditions(db, flt)).order_by(*_sort(sort)).limit(limit)
    if offset:
        stmt = stmt.offset(offset)
    with db.read() as conn:
        return [Job.from_row(r) for r in conn.execute(stmt)]


def count_window(db: Database, flt: JobFilter, *, cap: int | None = None,
                 newer_than: int | None = None) -> int:
    """Rows matching; with `cap`, counting stops there (cheap on huge tables); with
    `newer_than`, only jobs with a larger id (how far down a job sits, newest first)."""
    cond = conditions(db, flt)
    if newer_than is not None:
        cond.append(jobs_t.c.id > newer_than)
    inner = select(literal(1)).select_from(jobs_t).where(*cond)
    if cap is not None:
        inner = inner.limit(cap)
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(inner.subquery())).scalar()
                   or 0)


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
    stmt = select(jobs_t.c.id).where(*conditions(db, flt)).order_by(*_sort(sort)).limit(limit)
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
