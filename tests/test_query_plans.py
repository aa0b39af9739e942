"""The console's search keeps its index plan on PostgreSQL and finds running jobs, which
the search indexes leave out (migration 0005). Checked with EXPLAIN, not timed."""

from __future__ import annotations

from sqlalchemy import select, text

from core import enqueue, leases, reads
from core.db import Database
from core.models import jobs_t

TYPES = ["customer"]


def _plan(db: Database, term: str) -> str:
    flt = reads.JobFilter(search=term)
    stmt = (select(jobs_t.c.id).where(*flt.conditions_for(db))
            .order_by(*reads.sort_order("age")).limit(50))
    sql = str(stmt.compile(db.engine, compile_kwargs={"literal_binds": True}))
    with db.read() as conn:
        if db.is_postgres:
            conn.execute(text("ANALYZE sync_jobs"))
            return "\n".join(r[0] for r in conn.execute(text("EXPLAIN " + sql)))
        conn.execute(text("ANALYZE"))
        return "\n".join(r[-1] for r in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))


def test_search_uses_the_partial_indexes_and_finds_running_jobs(db: Database) -> None:
    enqueue.enqueue_many(db, "customer", [f"c_{i}" for i in range(20_000)], known_types=TYPES,
                       max_attempts=4)
    running = leases.claim(db, "w1", 50, lease_seconds=30, job_types=TYPES)
    plan = _plan(db, "c_1999")
    if db.is_postgres:
        assert "ix_sync_jobs_entity" in plan, plan
        assert "ix_sync_jobs_correlation" in plan, plan
        assert "ix_sync_jobs_status_id" in plan, plan  # the running jobs' branch
        assert "Seq Scan" not in plan, plan
    # (SQLite walks the newest rows first and stops after a screenful, with or without the
    # partial indexes: its plan for this OR was that before migration 0005 too.)
    term = running[0].entity_id
    assert term in {j.entity_id for j in reads.list_jobs(db, reads.JobFilter(search=term))}
