"""What a crash can lose: results are written in batches after the upstream work is done.

A worker finishes its attempts (the mock upstream has recorded the Billing write) but cannot
write the results yet: on SQLite another connection holds the write lock, on PostgreSQL
the job rows are locked and the worker's completion statement is seen waiting on them.
The worker is SIGKILLed in that window. Its results are gone, but nothing else is: the
leases expire, another worker re-runs the attempts, the jobs end as they should, the lost
attempts read `lease_expired`, and the only trace of the crash is the upstream work done
twice (an idempotent PUT, counted by the mock).
"""

from __future__ import annotations

import sqlite3

import psycopg
import pytest

from core import reads
from tests.conftest import PG_ADMIN_DSN
from tests.helpers import wait_for
from tests.reliability import _support as s
from tests.reliability.conftest import backend

pytestmark = pytest.mark.slow

LEASE = 2.0


def _pg_dsn(db_url: str) -> str:
    return PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + db_url.rsplit("/", 1)[1]


def _completion_blocked(dsn: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return bool(conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query ILIKE '%UPDATE%' "
            # the other writer that can wait on these rows is the lease renewal
            "AND query NOT ILIKE '%SET lease_expires_at%'").fetchone()[0])


def _queued(proc, jobs) -> set[int]:
    """Jobs whose first attempt's result `proc` has queued for writing (its debug log)."""
    return {e["job_id"] for e in proc.log_events()
            if e.get("event") == "attempt.queued" and e.get("job_id") in jobs
            and e.get("attempt") == 1}


def test_crash_in_the_flush_window_loses_only_retried_work(db_url, db, upstream, procs,
                                                            record):
    good = s.enqueue(db, "customer", ["x_slow"], max_attempts=3)[0]  # 3 s, then success
    bad = s.enqueue(db, "invoice", ["x_slow"], max_attempts=3)[0]  # 3 s, then fails
    spec = s.WorkerSpec(lease_seconds=LEASE, concurrency=4)
    # W1 logs at debug: `attempt.queued` says a result is done and waiting to be written.
    w1_spec = s.WorkerSpec(lease_seconds=LEASE, concurrency=4, extra={"log_level": "debug"})
    w1 = s.start_worker(procs, "W1", db_url, upstream, spec=w1_spec, max_seconds=60)
    wait_for(lambda: all(len(reads.attempts_for(db, j)) == 1 for j in (good, bad))
             and procs.check_deadlines() is None, timeout=30, message="W1 to claim both")
    corr = reads.get_job(db, good).correlation_id

    if db_url.startswith("sqlite"):
        holder = sqlite3.connect(s.sqlite_path(db_url), timeout=10, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
    else:
        holder = psycopg.connect(_pg_dsn(db_url))
        holder.execute("SELECT id FROM sync_jobs WHERE id = ANY(%s) FOR UPDATE", ([good, bad],))
    try:
        # The upstream work is done...
        wait_for(lambda: s.billing_writes(upstream).get(corr) == 1, timeout=15,
                 message="W1's Billing write")
        if not db_url.startswith("sqlite"):
            # ...and W1's completion statement is waiting on the row locks.
            wait_for(lambda: _completion_blocked(_pg_dsn(db_url)), timeout=15,
                     message="W1's completion to block")
        # ...and both results are queued in W1, unwritten.
        wait_for(lambda: _queued(w1, (good, bad)) == {good, bad}, timeout=15,
                 message="W1's two results to be queued")
        w1.signal(9)
        sigkills = 1
        assert w1.wait(10) == -9
        queued_at_kill = _queued(w1, (good, bad))
    finally:
        holder.rollback()
        holder.close()
    after_crash = {j: reads.get_job(db, j).status for j in (good, bad)}
    lost_statuses = set(after_crash.values())
    # A result lost in the crash: queued in W1, and its job still running under W1's lease.
    results_lost = sum(after_crash[j] == "running" for j in queued_at_kill)

    w2 = s.start_worker(procs, "W2", db_url, upstream, spec=spec, until_empty=True,
                        max_seconds=60)
    assert w2.wait(60) == 0, w2.tail()
    assert not procs.tracebacks(), procs.tails()
    g, b = reads.get_job(db, good), reads.get_job(db, bad)
    ga, ba = reads.attempts_for(db, good), reads.attempts_for(db, bad)
    writes = s.billing_writes(upstream).get(corr, 0)
    expected = {good: "success", bad: "failed"}
    record(backend=backend(db_url), jobs=len(expected), workers=len(procs.procs),
           sigkills=sigkills, results_lost_in_crash=results_lost,
           statuses_after_crash=sorted(lost_statuses),
           final=[g.status, b.status], history=[[a.outcome for a in ga],
                                                [a.outcome for a in ba]],
           billing_writes_for_success_job=writes,
           lost=sum(reads.get_job(db, j).status != want for j, want in expected.items()),
           duplicated=sum(max(0, sum(a.outcome == "success" for a in rows) - 1)
                          for rows in (ga, ba)),
           stuck=len(s.stuck_jobs(db)))
    assert lost_statuses == {"running"}, "the crash lost the results: the jobs still run"
    assert results_lost == 2
    assert (g.status, b.status) == ("success", "failed")
    assert [a.outcome for a in ga] == ["lease_expired", "success"]
    assert [a.outcome for a in ba] == ["lease_expired", "failed"]
    assert ga[0].finished_at - ga[0].started_at >= LEASE * 0.95, "recovered only after expiry"
    assert writes == 2, "the upstream work was redone once, not lost and not more"
    assert s.stuck_jobs(db) == []
