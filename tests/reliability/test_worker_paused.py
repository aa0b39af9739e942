"""Issue 4, point 2: a worker paused (SIGSTOP) past its lease comes back (SIGCONT) too late.

Worker A claims a slow job and is frozen; its lease expires; worker B recovers the job,
claims it and is mid-attempt when A resumes. A's upstream answer is already waiting, so
its handler finishes and it tries to write its result; for that moment the test holds A's
heartbeat row (the SQLite file), which its lease renewal waits behind, so the late
result, not the renewal, is what meets the fence. Nothing A writes may change the job:
its attempt is recorded `lease_lost` and the job's final state is B's.

The companion test drives the same interleaving through the engine's functions with an
injected clock, so the fenced completion path (not only the renewal path) is exercised on
every run.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
import urllib.request

import psycopg
import pytest

from core import clock, completion, leases, reads
from core.records import Completion
from tests.conftest import PG_ADMIN_DSN
from tests.helpers import wait_for
from tests.reliability import _support as s
from tests.reliability.conftest import backend

LEASE = 1.5


def _attempt(db, job_id: int, number: int):
    return next((a for a in reads.attempts_for(db, job_id) if a.number == number), None)


def _stopped(pid: int) -> bool:
    """The process is in the stopped state (every thread: /proc says T for the group)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


def _stop_outside_transaction(procs, proc, db, db_url: str) -> int:
    """SIGSTOP `proc` at a moment it holds no lock (a frozen lock holder would stall every
    other worker: a real hazard, but not this scenario). Returns how many tries it took."""
    for tries in range(1, 200):
        proc.signal(signal.SIGSTOP)
        wait_for(lambda: _stopped(proc.pid), timeout=5, interval=0.005,
                 message="the SIGSTOP to land")
        free = (s.sqlite_lock_free(db_url) if db_url.startswith("sqlite")
                else s.pg_busy_sessions(db) == 0)
        if free:
            return tries
        proc.signal(signal.SIGCONT)
        time.sleep(0.01)
    raise AssertionError("could not stop the worker outside a transaction")


class _HoldWrites:
    """Make the resumed worker's heartbeat (and so its lease renewal, which follows it)
    wait, while its handler runs free: on PostgreSQL by locking the worker's heartbeat row,
    on SQLite by holding the file's write lock. Released on exit."""

    def __init__(self, db_url: str, worker_id: str) -> None:
        self.sqlite = db_url.startswith("sqlite")
        if self.sqlite:
            self.conn = sqlite3.connect(s.sqlite_path(db_url), timeout=10, isolation_level=None)
            self.conn.execute("BEGIN IMMEDIATE")
        else:
            self.conn = psycopg.connect(_pg_dsn(db_url))
            self.conn.execute("SELECT id FROM sync_workers WHERE id = %s FOR UPDATE",
                              (worker_id,))

    def __enter__(self) -> _HoldWrites:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.sqlite:
            self.conn.execute("ROLLBACK")
        else:
            self.conn.rollback()
        self.conn.close()


def _mock_requests(upstream: str) -> int:
    with urllib.request.urlopen(f"{upstream}/_stats", timeout=10) as resp:
        return int(json.loads(resp.read())["requests"])


def _pg_dsn(db_url: str) -> str:
    return PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + db_url.rsplit("/", 1)[1]


@pytest.mark.slow
def test_paused_worker_is_fenced_out(db_url, db, upstream, procs, record):
    (job_id,) = s.enqueue(db, "customer", ["x_slow"], max_attempts=3)
    corr = reads.get_job(db, job_id).correlation_id
    spec = s.WorkerSpec(lease_seconds=LEASE, concurrency=2, shutdown_timeout_seconds=1,
                        extra={"log_level": "debug"})
    requests_before = _mock_requests(upstream)
    a = s.start_worker(procs, "A", db_url, upstream, spec=spec, max_seconds=60)
    wait_for(lambda: (_attempt(db, job_id, 1) or None) and procs.check_deadlines() is None,
             timeout=30, message="A to claim the job")
    first = _attempt(db, job_id, 1)
    a_id = first.worker_id
    # Freeze A only once its CRM request is in the mock's hands (it answers 3 s later).
    seen = [requests_before]

    def crm_asked() -> bool:  # each /_stats read counts itself: look for more than that
        now = _mock_requests(upstream)
        grew = now - seen[0] > 1
        seen[0] = now
        return grew

    wait_for(crm_asked, timeout=10, message="A's CRM request to reach the mock")
    asked_at = time.monotonic()
    tries = _stop_outside_transaction(procs, a, db, db_url)
    stopped_at = time.monotonic()

    b = s.start_worker(procs, "B", db_url, upstream, spec=spec, max_seconds=60)
    wait_for(lambda: _attempt(db, job_id, 2) is not None and procs.check_deadlines() is None,
             timeout=30, message="B to claim the job after A's lease expired")
    second = _attempt(db, job_id, 2)
    assert second.worker_id != a_id and second.outcome == "running"
    assert _attempt(db, job_id, 1).outcome == "lease_expired"
    # A's CRM answer (3 s after its request) is waiting in its socket before it wakes, so its
    # handler can finish at once; B is mid-attempt on its own 3 s call.
    wait_for(lambda: time.monotonic() > asked_at + 3.2, timeout=10,
             message="A's CRM answer to be ready")
    assert s.billing_writes(upstream).get(corr, 0) == 0
    paused_for = time.monotonic() - stopped_at

    with _HoldWrites(db_url, a_id):
        a.signal(signal.SIGCONT)
        # A's handler finishes (its Billing write lands) while its heartbeat and lease
        # renewal wait behind us, so it is A's late *result* that meets the fence.
        wait_for(lambda: s.billing_writes(upstream).get(corr, 0) == 1, timeout=10,
                 message="A's late Billing write")
        if db_url.startswith("sqlite"):
            # Under the file lock the database shows nothing: A's own log (at debug) says
            # when its late result is queued for writing.
            wait_for(lambda: any(e.get("event") == "attempt.queued"
                                 and e.get("job_id") == job_id and e.get("attempt") == 1
                                 for e in a.log_events()),
                     timeout=10, message="A's late result to be queued")
        else:
            wait_for(lambda: _attempt(db, job_id, 1).outcome == "lease_lost", timeout=10,
                     message="A's late result to be fenced")
    wait_for(lambda: _attempt(db, job_id, 1).outcome == "lease_lost", timeout=20,
             message="A's late attempt to be recorded lease_lost")
    assert _attempt(db, job_id, 2).outcome == "running", "A's late result touched B's attempt"
    wait_for(lambda: reads.get_job(db, job_id).status != "running", timeout=20,
             message="B to finish")

    job = reads.get_job(db, job_id)
    first, second = _attempt(db, job_id, 1), _attempt(db, job_id, 2)
    events = [e for e in a.log_events() if e.get("job_id") == job_id
              and e.get("event") in ("attempt.fenced", "lease.lost")]
    for p in (a, b):
        p.signal(signal.SIGTERM)
    assert a.wait(15) == 0 and b.wait(15) == 0, procs.tails()
    assert not procs.tracebacks(), procs.tails()

    record(backend=backend(db_url), jobs=1, workers=len(procs.procs), lease_seconds=LEASE,
           paused_seconds=round(paused_for, 1),
           stop_tries=tries, late_path=[e["event"] for e in events],
           history=[a_.outcome for a_ in reads.attempts_for(db, job_id)],
           billing_writes=s.billing_writes(upstream).get(corr, 0),
           lost=int(job.status != "success"),
           duplicated=max(0, sum(a_.outcome == "success"
                                 for a_ in reads.attempts_for(db, job_id)) - 1),
           stuck=len(s.stuck_jobs(db)))

    assert job.status == "success"
    assert job.lease_token == 2 and job.attempt_count == 2 and job.lease_owner is None
    assert first.worker_id == a_id and first.outcome == "lease_lost"
    assert first.error_type == "LeaseLost"
    assert second.outcome == "success" and second.worker_id != a_id
    assert job.finished_at == second.finished_at
    assert [e["event"] for e in events] == ["attempt.fenced"], "the late result met the fence"
    # The zombie's upstream call could not be taken back: Billing saw both (idempotent PUT).
    assert s.billing_writes(upstream).get(corr, 0) == 2


def test_late_completion_is_fenced_engine_level(db, settings):
    """The same interleaving, step by step: A's late result (success, retry, failure alike)
    changes nothing once B holds the lease, and B's result stands."""
    t = [1_000_000.0]
    clock.set_clock(lambda: t[0])
    ids = s.enqueue(db, "customer", ["c_1", "c_2", "c_3"], max_attempts=3)
    a_jobs = leases.claim(db, "A", 10, lease_seconds=LEASE, job_types=["customer"])
    assert [j.id for j in a_jobs] == ids
    t[0] += LEASE + 1
    recovered = leases.recover_expired(db)
    assert sorted(j for j, _ in recovered) == ids
    b_jobs = leases.claim(db, "B", 10, lease_seconds=LEASE, job_types=["customer"])
    assert [j.lease_token for j in b_jobs] == [2, 2, 2]
    assert leases.renew_leases(db, "A", {j.id: j.lease_token for j in a_jobs}, LEASE) == set()

    def done(job, worker, outcome):
        return Completion(job_id=job.id, lease_token=job.lease_token, worker_id=worker,
                          outcome=outcome, started_at=t[0], finished_at=t[0] + 0.5,
                          duration_ms=500, result={"by": worker} if outcome == "success"
                          else None, error_type=None if outcome == "success" else "X",
                          error_message=None if outcome == "success" else "late",
                          next_run_at=t[0] + 1 if outcome == "retry" else None)

    late = [done(a_jobs[0], "A", "success"), done(a_jobs[1], "A", "retry"),
            done(a_jobs[2], "A", "failed")]
    assert completion.complete(db, late) == [False, False, False]
    for job in b_jobs:
        row = reads.get_job(db, job.id)
        assert row.status == "running" and row.lease_owner == "B" and row.result is None
        assert [a.outcome for a in reads.attempts_for(db, job.id)] == ["lease_lost", "running"]
    assert completion.complete(db, [done(j, "B", "success") for j in b_jobs]) == [True] * 3
    for job in b_jobs:
        row = reads.get_job(db, job.id)
        assert row.status == "success" and row.result == {"by": "B"}
        assert [a.outcome for a in reads.attempts_for(db, job.id)] == ["lease_lost", "success"]
