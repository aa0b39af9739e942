"""Issue 4, point 4: SIGTERM under load.

Two workers share a queue of 600 jobs. W1 talks to the mock upstream and is mid-attempt
on the slow job (3 s) with a generous shutdown timeout: it must finish that attempt, write
it, and exit 0. W2's CRM is a black hole (connections accepted by the kernel, never
answered), so all its jobs hang; with a 1.5 s shutdown timeout it must give them back
(`released`, budget refunded) and exit 0 in time. Afterwards nothing is `running`, and a
third worker drains the rest: nothing lost.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections import Counter

import pytest
from sqlalchemy import update

from core import clock, enqueue, reads
from core.handlers import Registry
from core.integrations.mock import MockUpstream
from core.models import jobs_t
from core.worker import Worker
from tests.helpers import async_wait_for, wait_for
from tests.reliability import _support as s
from tests.reliability.conftest import backend

pytestmark = pytest.mark.slow


def _running(db, worker_id: str) -> list[int]:
    return [job_id for job_id, _ in s.leases_of(db, worker_id)]


def _full_of_hanging_jobs(procs, name: str, db, db_url: str, upstream: str, black_hole: str,
                          *, max_seconds: float, **spec: float):
    """A worker whose CRM never answers, started and waited for until all 8 of its slots
    hold a hanging attempt. Returns the process and its worker id."""
    proc = s.start_worker(procs, name, db_url, upstream, crm_url=f"{black_hole}/crm",
                          max_seconds=max_seconds, spec=s.WorkerSpec(concurrency=8, **spec))
    s.wait_running(procs, proc, db)
    worker_id = s.worker_id_of(db, proc.pid)
    wait_for(lambda: len(_running(db, worker_id)) == 8 and procs.check_deadlines() is None,
             timeout=30, message=f"{name} full of hanging jobs")
    return proc, worker_id


@pytest.fixture
def black_hole():
    """A loopback port that accepts TCP connections (kernel backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def test_sigterm_under_load(db_url, transition_log, upstream, black_hole, procs, record):
    db = transition_log
    s.enqueue(db, "customer", [f"c_{40_000 + k}" for k in range(300)], max_attempts=3)
    s.enqueue(db, "invoice", [f"i_{40_000 + k}" for k in range(300)], max_attempts=3)

    w2, id2 = _full_of_hanging_jobs(procs, "W2", db, db_url, upstream, black_hole,
                                    max_seconds=60, lease_seconds=5,
                                    shutdown_timeout_seconds=1.5, http_timeout_seconds=60)
    # The slow job goes to the front of the queue, for W1 (W2 has no free slot left).
    (slow,) = s.enqueue(db, "customer", ["x_slow"], max_attempts=3)
    with db.write() as conn:
        conn.execute(update(jobs_t).where(jobs_t.c.id == slow).values(next_run_at=0))
    w1 = s.start_worker(procs, "W1", db_url, upstream, max_seconds=60, spec=s.WorkerSpec(
        lease_seconds=5, concurrency=8, shutdown_timeout_seconds=10))
    s.wait_running(procs, w1, db)
    id1 = s.worker_id_of(db, w1.pid)
    wait_for(lambda: slow in _running(db, id1) and procs.check_deadlines() is None,
             timeout=30, message="W1 mid-attempt on the slow job")
    hanging = set(_running(db, id2))
    w1_in_flight = set(_running(db, id1))
    busy_before = s.status_counts(db)

    sigterm_at = clock.now()
    t0 = time.monotonic()
    sigterms = 0
    for w in (w1, w2):
        w.signal(signal.SIGTERM)
        sigterms += 1
    rc2 = w2.wait(15)
    t2 = time.monotonic() - t0
    rc1 = w1.wait(20)
    t1 = time.monotonic() - t0
    assert (rc1, rc2) == (0, 0), procs.tails()
    after = s.status_counts(db)
    jobs, attempts = s.all_jobs(db), s.all_attempts(db)
    released = {j for j, rows in attempts.items() for a in rows if a.outcome == "released"}

    # Nothing stays running; what W2 held was given back, at no cost to its budget.
    assert after["running"] == 0, after
    assert released == hanging
    for job_id in hanging:
        job = jobs[job_id]
        assert job.status == "pending" and job.attempt_count == 0, job
        assert job.lease_owner is None and job.lease_expires_at is None
    # W1 finished its in-flight slow attempt instead of abandoning it.
    assert jobs[slow].status == "success"
    assert [a.outcome for a in attempts[slow]] == ["success"]
    assert 1.0 <= t2 < 6.0, f"W2 took {t2:.1f}s to stop with a 1.5 s shutdown timeout"
    assert s.budget_violations(jobs, attempts) == []

    drain = s.start_worker(procs, "W3", db_url, upstream, until_empty=True, max_seconds=90,
                           spec=s.WorkerSpec(lease_seconds=5, concurrency=8))
    assert drain.wait(90) == 0, drain.tail()
    assert not procs.tracebacks(), procs.tails()
    final = s.status_counts(db)
    jobs, attempts = s.all_jobs(db), s.all_attempts(db)
    multi = [j for j, rows in attempts.items() if sum(a.outcome == "success" for a in rows) > 1]
    # Duplicated: more than one success attempt, or more than one Billing write at the mock.
    writes = s.billing_writes(upstream)
    twice_billed = [j for j, job in jobs.items() if writes.get(job.correlation_id, 0) > 1]
    finished_in_shutdown = [a for rows in attempts.values() for a in rows
                            if a.worker_id == id1 and a.outcome == "success"
                            and a.finished_at >= sigterm_at]
    record(backend=backend(db_url), jobs=len(jobs), workers=len(procs.procs),
           sigterms=sigterms, in_flight_at_sigterm=len(hanging) + len(w1_in_flight),
           released=len(released), finished_during_shutdown=len(finished_in_shutdown),
           billing_writes=sum(writes.get(j.correlation_id, 0) for j in jobs.values()),
           w1_exit_seconds=round(t1, 1),
           w2_exit_seconds=round(t2, 1), status_before=dict(busy_before),
           final=dict(final), lost=len(jobs) - final["success"],
           duplicated=len(set(multi) | set(twice_billed)), stuck=len(s.stuck_jobs(db)),
           outcomes=dict(Counter(a.outcome for rows in attempts.values() for a in rows)))
    assert final == Counter({"success": len(jobs)}), final
    assert multi == [] and twice_billed == []
    assert slow in {a.job_id for a in finished_in_shutdown}
    assert s.budget_violations(jobs, attempts) == []
    assert s.illegal_transitions(db) == []


async def _sleepy(ctx):
    await asyncio.sleep(0.3)
    return {"slept": True}


def test_shutdown_waits_for_the_last_results_to_be_written(db, settings):
    """In-process and deterministic: a stop requested while attempts run lets them finish
    within the timeout and writes every result before run() returns; the worker must not
    abandon a batch its background flusher is writing at that moment."""
    reg = Registry()
    reg.register("sleepy", _sleepy)
    ids = enqueue.enqueue_many(db, "sleepy", [f"e{k}" for k in range(4)], known_types=["sleepy"],
                             max_attempts=3)
    worker = Worker(db, settings, registry=reg, mock=MockUpstream(), concurrency=4)

    async def main() -> None:
        run = asyncio.create_task(worker.run())
        await async_wait_for(lambda: worker.in_flight == 4, timeout=10, message="4 in flight")
        worker.request_stop()
        await asyncio.wait_for(run, 15)

    asyncio.run(main())
    statuses = {reads.get_job(db, r.job_id).status for r in ids}
    assert statuses == {"success"}, statuses
    assert worker.stats.released == 0 and worker.stats.succeeded == 4


def test_second_sigterm_releases_at_once(db_url, db, upstream, black_hole, procs, record):
    """A second signal means "now" (cli.py): a worker draining hanging attempts under a long
    shutdown timeout gives them back and exits 0 at once instead of waiting it out."""
    s.enqueue(db, "customer", [f"c_{41_000 + k}" for k in range(8)], max_attempts=3)
    w, _ = _full_of_hanging_jobs(procs, "W", db, db_url, upstream, black_hole,
                                 max_seconds=90, lease_seconds=30,
                                 shutdown_timeout_seconds=60, http_timeout_seconds=120)
    w.signal(signal.SIGTERM)
    wait_for(lambda: any(e.get("event") == "worker.draining" for e in w.log_events()),
             timeout=10, message="the drain to start")
    t0 = time.monotonic()
    w.signal(signal.SIGTERM)
    sigterms = 2
    assert w.wait(20) == 0, w.tail()
    took = time.monotonic() - t0
    counts = s.status_counts(db)
    jobs, attempts = s.all_jobs(db), s.all_attempts(db)
    # Expected right after the stop: every job pending again (released), none run twice.
    record(backend=backend(db_url), jobs=len(jobs), workers=len(procs.procs),
           sigterms=sigterms, exit_seconds_after_second=round(took, 1), final=dict(counts),
           released=sum(a.outcome == "released" for rows in attempts.values() for a in rows),
           lost=sum(j.status != "pending" for j in jobs.values()),
           duplicated=sum(max(0, sum(a.outcome == "success" for a in rows) - 1)
                          for rows in attempts.values()),
           stuck=counts["running"])
    assert took < 10, f"the second SIGTERM took {took:.1f}s to stop the worker"
    assert counts == {"pending": 8}, counts
    assert s.budget_violations(jobs, attempts) == []
