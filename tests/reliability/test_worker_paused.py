"""Issue 4, point 2: a worker paused (SIGSTOP) past its lease comes back (SIGCONT) too late.

Worker A claims a slow job and is frozen; its lease expires; worker B recovers the job,
claims it and is mid-attempt when A resumes. Whatever A does next (finish its handler and
try to write, or notice at its next renewal), nothing it writes may change the job: its
attempt is recorded `lease_lost` and the job's final state is B's.

The companion test drives the same interleaving through the engine's functions with an
injected clock, so the fenced completion path (not only the renewal path) is exercised on
every run.
"""

from __future__ import annotations

import signal
import time

import pytest

from core import clock, queue
from core.records import Completion
from tests.helpers import wait_for
from tests.reliability import _support as s
from tests.reliability.conftest import backend

LEASE = 1.5


def _attempt(db, job_id: int, number: int):
    return next((a for a in queue.attempts_for(db, job_id) if a.number == number), None)


def _stop_outside_transaction(procs, proc, db, db_url: str) -> int:
    """SIGSTOP `proc` at a moment it holds no lock (a frozen lock holder would stall every
    other worker: a real hazard, but not this scenario). Returns how many tries it took."""
    for tries in range(1, 200):
        proc.signal(signal.SIGSTOP)
        time.sleep(0.05)  # let the stop land before we look
        free = (s.sqlite_lock_free(db_url) if db_url.startswith("sqlite")
                else s.pg_busy_sessions(db) == 0)
        if free:
            return tries
        proc.signal(signal.SIGCONT)
        time.sleep(0.01)
    raise AssertionError("could not stop the worker outside a transaction")


@pytest.mark.slow
def test_paused_worker_is_fenced_out(db_url, db, upstream, procs, record):
    (job_id,) = s.enqueue(db, "customer", ["x_slow"], max_attempts=3)
    spec = s.WorkerSpec(lease_seconds=LEASE, concurrency=2, shutdown_timeout_seconds=1)
    a = s.start_worker(procs, "A", db_url, upstream, spec=spec, max_seconds=60)
    wait_for(lambda: (_attempt(db, job_id, 1) or None) and procs.check_deadlines() is None,
             timeout=30, message="A to claim the job")
    a_id = _attempt(db, job_id, 1).worker_id
    tries = _stop_outside_transaction(procs, a, db, db_url)
    stopped_at = time.monotonic()

    b = s.start_worker(procs, "B", db_url, upstream, spec=spec, max_seconds=60)
    wait_for(lambda: _attempt(db, job_id, 2) is not None and procs.check_deadlines() is None,
             timeout=30, message="B to claim the job after A's lease expired")
    second = _attempt(db, job_id, 2)
    assert second.worker_id != a_id and second.outcome == "running"
    assert _attempt(db, job_id, 1).outcome == "lease_expired"
    paused_for = time.monotonic() - stopped_at

    a.signal(signal.SIGCONT)  # B is mid-attempt (x_slow takes 3 s)
    wait_for(lambda: _attempt(db, job_id, 1).outcome == "lease_lost", timeout=20,
             message="A's late attempt to be recorded lease_lost")
    assert _attempt(db, job_id, 2).outcome == "running", "A's late result touched B's attempt"
    wait_for(lambda: queue.get_job(db, job_id).status != "running", timeout=20,
             message="B to finish")

    job = queue.get_job(db, job_id)
    first, second = _attempt(db, job_id, 1), _attempt(db, job_id, 2)
    events = [e for e in a.log_events() if e.get("job_id") == job_id
              and e.get("event") in ("attempt.fenced", "lease.lost")]
    for p in (a, b):
        p.signal(signal.SIGTERM)
    assert a.wait(15) == 0 and b.wait(15) == 0, procs.tails()
    assert not procs.tracebacks(), procs.tails()

    record(backend=backend(db_url), jobs=1, workers=2, paused_seconds=round(paused_for, 1),
           stop_tries=tries, late_path=[e["event"] for e in events],
           history=[a_.outcome for a_ in queue.attempts_for(db, job_id)],
           lost=int(job.status != "success"), duplicated=0, stuck=int(job.status == "running"))

    assert job.status == "success"
    assert job.lease_token == 2 and job.attempt_count == 2 and job.lease_owner is None
    assert first.worker_id == a_id and first.outcome == "lease_lost"
    assert first.error_type == "LeaseLost"
    assert second.outcome == "success" and second.worker_id != a_id
    assert job.finished_at == second.finished_at
    assert events, "A never noticed it had lost the lease"


def test_late_completion_is_fenced_engine_level(db, settings):
    """The same interleaving, step by step: A's late result (success, retry, failure alike)
    changes nothing once B holds the lease, and B's result stands."""
    t = [1_000_000.0]
    clock.set_clock(lambda: t[0])
    ids = s.enqueue(db, "customer", ["c_1", "c_2", "c_3"], max_attempts=3)
    a_jobs = queue.claim(db, "A", 10, lease_seconds=LEASE, job_types=["customer"])
    assert [j.id for j in a_jobs] == ids
    t[0] += LEASE + 1
    recovered = queue.recover_expired(db)
    assert sorted(j for j, _ in recovered) == ids
    b_jobs = queue.claim(db, "B", 10, lease_seconds=LEASE, job_types=["customer"])
    assert [j.lease_token for j in b_jobs] == [2, 2, 2]
    assert queue.renew_leases(db, "A", {j.id: j.lease_token for j in a_jobs}, LEASE) == set()

    def done(job, worker, outcome):
        return Completion(job_id=job.id, lease_token=job.lease_token, worker_id=worker,
                          outcome=outcome, started_at=t[0], finished_at=t[0] + 0.5,
                          duration_ms=500, result={"by": worker} if outcome == "success"
                          else None, error_type=None if outcome == "success" else "X",
                          error_message=None if outcome == "success" else "late",
                          next_run_at=t[0] + 1 if outcome == "retry" else None)

    late = [done(a_jobs[0], "A", "success"), done(a_jobs[1], "A", "retry"),
            done(a_jobs[2], "A", "failed")]
    assert queue.complete(db, late) == [False, False, False]
    for job in b_jobs:
        row = queue.get_job(db, job.id)
        assert row.status == "running" and row.lease_owner == "B" and row.result is None
        assert [a.outcome for a in queue.attempts_for(db, job.id)] == ["lease_lost", "running"]
    assert queue.complete(db, [done(j, "B", "success") for j in b_jobs]) == [True] * 3
    for job in b_jobs:
        row = queue.get_job(db, job.id)
        assert row.status == "success" and row.result == {"by": "B"}
        assert [a.outcome for a in queue.attempts_for(db, job.id)] == ["lease_lost", "success"]
