"""Read queries shaped for the console's live views (no Textual, no Rich here).

The job window itself is core.queue's list_jobs / count_jobs (index walks at a million
rows: see JobFilter.conditions and SORTS); these are the console's extra questions.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.sql import operators

from core.db import Database
from core.models import attempts_t, jobs_t
from core.queue import JobFilter, count_jobs, list_jobs, sort_order
from core.records import Job


def list_window(db: Database, flt: JobFilter, *, limit: int, offset: int = 0,
                sort: str = "age") -> list[Job]:
    return list_jobs(db, flt, limit=limit, offset=offset, sort=sort)


def reversed_order(sort: str) -> list[object]:
    """The sort's ORDER BY, every column the other way: the same index walked from its
    other end."""
    out: list[object] = []
    for clause in sort_order(sort):
        column = clause.element
        out.append(column.asc() if clause.modifier is operators.desc_op else column.desc())
    return out


def list_window_from_end(db: Database, flt: JobFilter, *, limit: int, offset: int = 0,
                         sort: str = "age") -> list[Job]:
    """The window `offset` rows before the end of the list, in list order: the index walked
    backwards for `offset + limit` rows (G, the oldest jobs, at a million rows without
    counting or skipping the million)."""
    stmt = (select(jobs_t).where(*flt.conditions_for(db)).order_by(*reversed_order(sort))
            .limit(limit))
    if offset:
        stmt = stmt.offset(offset)
    with db.read() as conn:
        jobs = [Job.from_row(r) for r in conn.execute(stmt)]
    jobs.reverse()
    return jobs


def count_window(db: Database, flt: JobFilter, *, cap: int | None = None,
                 newer_than: int | None = None) -> int:
    return count_jobs(db, flt, cap=cap, newer_than=newer_than)


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
