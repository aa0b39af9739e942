"""The console's search keeps its index plan on PostgreSQL and finds running jobs, which
the search indexes leave out (migration 0005). Checked with EXPLAIN, not timed."""

from __future__ import annotations

import re

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


def test_a_held_types_backlog_is_not_walked_by_the_claim_of_the_others(db: Database) -> None:
    """With a type held back (its upstream paused or open) the protection claims the other
    types one at a time through ix_sync_jobs_due_type: the held type's due backlog, older
    than everything else, is never walked past (core.leases, migration 0011)."""
    enqueue.enqueue_many(db, "held", [f"h_{i}" for i in range(20_000)], known_types=["held"],
                         max_attempts=4)
    enqueue.enqueue_many(db, "customer", [f"c_{i}" for i in range(5)], known_types=TYPES,
                         max_attempts=4)
    now = 4_000_000_000.0  # every job is due
    with db.write() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        if db.is_postgres:
            conn.execute(text("ANALYZE sync_jobs"))
            for setting in leases._PG_CLAIM_PLAN:
                raw.execute(setting)
            plan = "\n".join(r[0] for r in raw.execute(
                "EXPLAIN (ANALYZE, COSTS OFF) " + leases._PG_CLAIM_TYPE,
                {"now": now, "type": "customer", "limit": 50, "worker": "w",
                 "expires": now + 30}))
            walked = [int(x) for x in re.findall(r"Rows Removed by Filter: (\d+)", plan)]
            assert sum(walked) < 100, plan
        else:
            plan = "\n".join(r[-1] for r in raw.execute(
                "EXPLAIN QUERY PLAN " + leases._SQLITE_CLAIM_TYPE,
                ("w", now, now + 30, now, now, "customer", 50)))
        assert "ix_sync_jobs_due_type" in plan, plan
        conn.rollback()
    # And the claim itself: the five customer jobs, none of the held ones.
    with db.write() as conn:
        claimed = leases.claim_rows(conn, db.is_postgres, "w", 50, now, 30, ["customer"],
                                    per_type=True)
    assert sorted(j.entity_id for j in claimed) == [f"c_{i}" for i in range(5)]


def test_a_per_type_claim_takes_every_admitted_type_up_to_the_limit(db: Database) -> None:
    enqueue.enqueue_many(db, "a", [f"a_{i}" for i in range(5)], known_types=["a"],
                         max_attempts=4)
    enqueue.enqueue_many(db, "b", [f"b_{i}" for i in range(5)], known_types=["b"],
                         max_attempts=4)
    now = 4_000_000_000.0
    seen: list[str] = []
    for _ in range(3):  # 4 + 4 + 2: each claim fills its limit from both types if needed
        with db.write() as conn:
            got = leases.claim_rows(conn, db.is_postgres, "w", 4, now, 30, ["a", "b"],
                                    per_type=True)
        assert len(got) == min(4, 10 - len(seen))
        assert [j.id for j in got] == sorted(j.id for j in got)
        seen += [j.entity_id for j in got]
    assert sorted(seen) == sorted([f"a_{i}" for i in range(5)] + [f"b_{i}" for i in range(5)])
