"""Small read queries the console needs beyond core.queue's (no Textual, no Rich here)."""

from __future__ import annotations

from sqlalchemy import func, select

from core.db import Database
from core.models import jobs_t
from core.queue import SORTS, InvalidInput, JobFilter


def finished_since(db: Database, since: float) -> int:
    """Jobs that reached a final status at or after `since` (uses ix_sync_jobs_finished_at);
    the console's jobs/s when the workers run elsewhere."""
    with db.read() as conn:
        return int(conn.execute(
            select(func.count()).select_from(jobs_t).where(jobs_t.c.finished_at >= since)
        ).scalar() or 0)


def job_ids(db: Database, flt: JobFilter, *, sort: str = "age", limit: int = 10_000) -> list[int]:
    """Ids of the jobs matching a filter, in list order, without loading whole rows
    ("mark everything matching the filter")."""
    if sort not in SORTS:
        raise InvalidInput(f"unknown sort {sort!r}")
    stmt = select(jobs_t.c.id).where(*flt.conditions()).order_by(*SORTS[sort]).limit(limit)
    with db.read() as conn:
        return [int(i) for i in conn.execute(stmt).scalars()]
