"""Issue 4, point 5: the database misbehaves under running workers.

- PostgreSQL: every connection of the workers is killed (`pg_terminate_backend`) again and
  again mid-run, then the database refuses all connections for a few seconds (an outage
  scoped to this test's database, so other users of the server are untouched).
- PostgreSQL restart (`pg_ctlcluster ... restart`): opt-in with SYNCBRIDGE_TEST_PG_RESTART=1,
  because other test sessions may share the server.
- SQLite: another process holds the file's write lock for seconds, twice.

The workers log, reconnect or wait, and carry on: every job ends `success`, none is lost,
stuck or succeeds twice, and every status move is legal.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections import Counter

import psycopg
import pytest

from tests.conftest import PG_ADMIN_DSN
from tests.helpers import wait_for
from tests.reliability import _support as s
from tests.reliability.conftest import backend

pytestmark = pytest.mark.slow

DB_EVENTS = ("claim.failed", "complete.failed", "heartbeat.failed", "lease.renew_failed",
             "recover.failed", "lease.abandon_failed", "worker.release_failed")


def _population(db, n: int) -> int:
    s.enqueue(db, "customer", [f"c_{60_000 + k}" for k in range(n // 2)], max_attempts=6)
    s.enqueue(db, "invoice", [f"i_{60_000 + k}" for k in range(n - n // 2)], max_attempts=6)
    return n


def _successes(db) -> int:
    try:
        return s.status_counts(db)["success"]
    except Exception:  # the test's own connection may be the one just killed
        return -1


def _check_and_record(db, procs, workers, upstream, record, **figures) -> None:
    for w in workers:
        assert w.wait(120) == 0, procs.tails()
    assert not procs.tracebacks(), procs.tails()
    jobs, attempts = s.all_jobs(db), s.all_attempts(db)
    final = Counter(j.status for j in jobs.values())
    multi = [j for j, rows in attempts.items() if sum(a.outcome == "success" for a in rows) > 1]
    events = Counter(e["event"] for w in workers for e in w.log_events()
                     if e.get("event") in DB_EVENTS)
    writes = s.billing_writes(upstream)
    redone = sum(max(0, writes.get(j.correlation_id, 0) - 1) for j in jobs.values())
    outcomes = Counter(a.outcome for rows in attempts.values() for a in rows)
    record(jobs=len(jobs), workers=len(workers), final=dict(final),
           worker_db_error_events=dict(events), attempt_outcomes=dict(outcomes),
           upstream_writes_redone=redone, lost=len(jobs) - final["success"],
           duplicated=len(multi), stuck=len(s.stuck_jobs(db)), **figures)
    assert final == Counter({"success": len(jobs)}), final
    assert multi == []
    assert s.illegal_transitions(db) == []
    for job_id, job in jobs.items():
        assert job.attempt_count == len(attempts[job_id]), job_id


def _set_connections(dbname: str, allow: bool) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'ALTER DATABASE "{dbname}" WITH ALLOW_CONNECTIONS {str(allow).lower()}')


def _two_workers(procs, db_url: str, upstream: str, *, lease_seconds: float) -> list:
    """Two worker processes draining the population until it is empty."""
    spec = s.WorkerSpec(lease_seconds=lease_seconds, concurrency=8)
    return [s.start_worker(procs, f"w{i}", db_url, upstream, spec=spec, until_empty=True,
                           max_seconds=120) for i in range(2)]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_postgres_connections_killed_and_outage(db_url, transition_log, upstream, procs,
                                                record):
    db = transition_log
    n = _population(db, 1200)
    workers = _two_workers(procs, db_url, upstream, lease_seconds=3)
    for w in workers:
        s.wait_running(procs, w, db)
    wait_for(lambda: _successes(db) > 50, timeout=30, message="the run to get going")

    killed, rounds = 0, 0
    while rounds < 8 and _successes(db) < n - 300:
        procs.check_deadlines()
        killed += s.pg_terminate_others(db)
        rounds += 1
        before = _successes(db)
        # carrying on: some job finishes after each blow before the next one lands
        wait_for(lambda before=before: _successes(db) > before, timeout=30,
                 message="progress after pg_terminate_backend")
    assert rounds >= 3, "the run finished before enough connection kills landed"

    # An outage: the database refuses every connection for 3 s; all sessions are cut.
    dbname = db_url.rsplit("/", 1)[1]
    outage_at = _successes(db)
    _set_connections(dbname, False)
    try:
        killed += s.pg_terminate_others(db)
        db.dispose()
        time.sleep(3)  # the fault itself: the outage lasts this long
    finally:
        _set_connections(dbname, True)
    _check_and_record(db, procs, workers, upstream, record, backend=backend(db_url),
                      terminate_rounds=rounds, backends_terminated=killed,
                      outage_seconds=3, done_before_outage=outage_at)


@pytest.mark.skipif(os.environ.get("SYNCBRIDGE_TEST_PG_RESTART") != "1",
                    reason="restarts the shared PostgreSQL server: opt in with "
                           "SYNCBRIDGE_TEST_PG_RESTART=1")
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_postgres_restart(db_url, transition_log, upstream, procs, record):
    db = transition_log
    n = _population(db, 800)
    workers = _two_workers(procs, db_url, upstream, lease_seconds=3)
    wait_for(lambda: _successes(db) > 100, timeout=30, message="the run to get going")
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    t0 = time.monotonic()
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
                   check=True, timeout=60)
    wait_for(lambda: subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"],
                                    timeout=10).returncode == 0, timeout=60, interval=0.2,
             message="PostgreSQL back")
    down = time.monotonic() - t0
    db.dispose()
    assert _successes(db) < n, "the restart landed after the run"
    _check_and_record(db, procs, workers, upstream, record, backend="postgresql",
                      restart_seconds=round(down, 1))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sqlite_writer_holds_the_lock(db_url, transition_log, upstream, procs, record):
    db = transition_log
    n = _population(db, 1000)
    # Leases outlive the lock, so the workers must simply wait and carry on.
    workers = _two_workers(procs, db_url, upstream, lease_seconds=10)
    holds = []
    for _ in range(2):
        wait_for(lambda: _successes(db) > 100 + 250 * len(holds), timeout=60,
                 message="progress before the lock")
        assert _successes(db) < n, "the run finished before the lock landed"
        blocker = sqlite3.connect(s.sqlite_path(db_url), timeout=30, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            frozen = _successes(db)  # readers still read (WAL)
            t0 = time.monotonic()
            time.sleep(3)  # the fault itself: hold the write lock this long
            assert _successes(db) == frozen, "someone wrote while we held the lock"
            holds.append(round(time.monotonic() - t0, 1))
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()
    attempts = s.all_attempts(db)
    _check_and_record(db, procs, workers, upstream, record, backend="sqlite",
                      lock_holds_seconds=holds)
    incidents = [a for rows in attempts.values() for a in rows
                 if a.outcome in ("lease_lost", "lease_expired")]
    assert incidents == [], "leases outlive the lock: nothing should have been recovered"
