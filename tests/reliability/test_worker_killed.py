"""Issue 4, point 1: a worker SIGKILLed mid-attempt, again and again.

Each round starts a fresh worker process, waits until it is mid-attempt on the slow job
(the mock's `x_slow` answers after 3 s) with ordinary jobs in flight beside them, and
SIGKILLs it. The next worker must recover the expired leases (not before they expire),
close the dead worker's attempts as `lease_expired`, and finish everything: nothing lost,
nothing left running, no job succeeding twice.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.helpers import wait_for
from tests.reliability import _support as s
from tests.reliability.conftest import backend

pytestmark = pytest.mark.slow

KILLS = 2
LEASE = 1.5


def test_worker_sigkilled_mid_attempt_repeatedly(db_url, transition_log, upstream, procs,
                                                 record):
    db = transition_log
    # The slow job first, so every worker's first claim includes it. (The mock's x_slow
    # answers a customer record, so only the customer type succeeds with it.)
    slow = s.enqueue(db, "customer", ["x_slow"], max_attempts=KILLS + 2)
    normal = s.enqueue(db, "customer", [f"c_{30_000 + k}" for k in range(150)], 4)
    normal += s.enqueue(db, "invoice", [f"i_{30_000 + k}" for k in range(150)], 4)
    spec = s.WorkerSpec(lease_seconds=LEASE, concurrency=6)

    killed: dict[str, list[tuple[int, int]]] = {}
    for round_no in range(1, KILLS + 1):
        w = s.start_worker(procs, f"victim{round_no}", db_url, upstream, spec=spec,
                           max_seconds=60)
        s.wait_running(procs, w, db)
        wid = s.worker_id_of(db, w.pid)
        assert wid is not None

        def mid_attempt(wid: str = wid, round_no: int = round_no) -> bool:
            procs.check_deadlines()
            running = s.leases_of(db, wid)
            # the slow job on its round_no-th attempt, in this worker's hands
            return sum(1 for j, n in running if j in slow and n == round_no) == len(slow)

        wait_for(mid_attempt, timeout=30, message=f"victim{round_no} mid-attempt")
        w.signal(9)
        assert w.wait(10) == -9
        # Read after the kill: a completion written between a read and the signal would
        # otherwise count as killed. No other worker runs yet, so the dead one's leases are
        # exactly the attempts it had in flight.
        killed[wid] = s.leases_of(db, wid)

    final = s.start_worker(procs, "survivor", db_url, upstream, spec=spec, until_empty=True,
                           max_seconds=90)
    assert final.wait(90) == 0, final.tail()
    assert not procs.tracebacks(), procs.tails()

    jobs = s.all_jobs(db)
    attempts = s.all_attempts(db)
    by_key = {(a.job_id, a.number): a for rows in attempts.values() for a in rows}
    expired = [a for rows in attempts.values() for a in rows if a.outcome == "lease_expired"]
    killed_attempts = [(wid, key) for wid, keys in killed.items() for key in keys]
    not_closed = [k for _, k in killed_attempts if by_key[k].outcome != "lease_expired"]
    early = [(a.job_id, a.number) for a in expired
             if a.finished_at - a.started_at < LEASE * 0.95]
    wrong = [j for j, job in jobs.items() if job.status != "success"]
    multi = [j for j, rows in attempts.items() if sum(a.outcome == "success" for a in rows) != 1]
    writes = s.billing_writes(upstream)
    redone = sum(max(0, writes.get(job.correlation_id, 0) - 1) for job in jobs.values())

    record(backend=backend(db_url), jobs=len(jobs), workers=len(procs.procs), sigkills=KILLS,
           attempts_killed=len(killed_attempts), lease_expired=len(expired),
           outcomes=dict(Counter(a.outcome for a in by_key.values())),
           lost=len(wrong), duplicated=len(multi), stuck=len(s.stuck_jobs(db)),
           billing_writes_redone_after_kill=redone)

    assert wrong == [], f"jobs not finished: {wrong[:10]}"
    assert s.stuck_jobs(db) == []
    assert multi == [], "a job without exactly one success attempt"
    assert not_closed == [], f"killed attempts not closed as lease_expired: {not_closed}"
    assert early == [], f"leases recovered before they expired: {early}"
    for job_id in slow:
        history = [a.outcome for a in attempts[job_id]]
        assert history == ["lease_expired"] * KILLS + ["success"], history
        assert {a.worker_id for a in attempts[job_id]} == {*killed, s.worker_id_of(
            db, final.pid)}
    for job_id, job in jobs.items():
        assert job.attempt_count == len(attempts[job_id])
    assert s.illegal_transitions(db) == []
