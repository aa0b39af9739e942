"""Read queries shaped for the console's live views (no Textual, no Rich here).

The job window itself is core.queue's list_jobs / count_jobs (index walks at a million
rows, from either end: see JobFilter.conditions and SORTS); these are the console's extra
questions.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select

from core.db import Database
from core.models import attempts_t, jobs_t
from core.queue import JobFilter, sort_order


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
