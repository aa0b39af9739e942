"""Issue 4, point 3: many worker processes drain thousands of mixed jobs over real HTTP.

4 workers on PostgreSQL, 2 on one SQLite file. The mock upstream (a separate process)
counts Billing writes per correlation id. Properties: every job ends in its expected state,
no job ran on two workers at once (no overlapping attempts, no lease lost or expired),
successful Billing writes == success jobs (one each), every status move legal.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.helpers import wait_for
from tests.reliability import _support as s
from tests.reliability._scenarios import mixed
from tests.reliability.conftest import backend

pytestmark = pytest.mark.slow

SIZES = {"postgresql": (4, 2600, 400), "sqlite": (2, 1700, 300)}  # workers, success, missing


def test_many_workers_many_jobs(db_url, transition_log, upstream, procs, record):
    db = transition_log
    kind = backend(db_url)
    n_workers, n_success, n_missing = SIZES[kind]
    population = mixed(n_success, n_missing)
    expected: dict[int, str] = {}
    for job_type in ("customer", "invoice"):
        rows = [(e, st) for t, e, st in population if t == job_type]
        ids = s.enqueue(db, job_type, [e for e, _ in rows], max_attempts=4)
        expected.update({jid: st for jid, (_, st) in zip(ids, rows, strict=True)})
    assert len(expected) == len(population)

    spec = s.WorkerSpec(lease_seconds=10, concurrency=8)
    t0 = time.monotonic()
    workers = [s.start_worker(procs, f"w{i}", db_url, upstream, spec=spec, until_empty=True,
                              max_seconds=150) for i in range(n_workers)]

    def all_exited() -> bool:
        procs.check_deadlines()
        return not any(w.alive() for w in workers)

    wait_for(all_exited, timeout=150, interval=0.2, message="workers to drain the queue")
    elapsed = time.monotonic() - t0
    codes = [w.popen.returncode for w in workers]
    assert codes == [0] * n_workers, procs.tails()
    assert not procs.tracebacks(), procs.tails()

    jobs = s.all_jobs(db)
    attempts = s.all_attempts(db)
    writes = s.billing_writes(upstream)
    final = {jid: jobs[jid].status for jid in expected}
    wrong = {jid: (expected[jid], st) for jid, st in final.items() if st != expected[jid]}
    success_ids = [jid for jid, st in final.items() if st == "success"]
    ours = {jobs[jid].correlation_id: jid for jid in expected}
    our_writes = {c: n for c, n in writes.items() if c in ours}
    multi_success = [j for j in expected
                     if sum(a.outcome == "success" for a in attempts.get(j, [])) > 1]
    incidents = Counter(a.outcome for rows in attempts.values() for a in rows
                        if a.outcome in ("lease_lost", "lease_expired", "running"))
    workers_used = Counter(a.worker_id for rows in attempts.values() for a in rows)
    outcomes = Counter(a.outcome for rows in attempts.values() for a in rows)

    record(backend=kind, jobs=len(expected), workers=n_workers,
           attempts=sum(outcomes.values()), attempt_outcomes=dict(outcomes),
           final=dict(Counter(final.values())), seconds=round(elapsed, 1),
           jobs_per_second=round(len(expected) / elapsed, 1),
           billing_writes=sum(our_writes.values()), success_jobs=len(success_ids),
           lost=len(wrong), duplicated=len(multi_success) + sum(
               max(0, n - 1) for n in our_writes.values()),
           stuck=len(s.stuck_jobs(db)), overlapping=len(s.overlapping_attempts(attempts)),
           illegal_transitions=len(s.illegal_transitions(db)),
           per_worker_attempts=sorted(workers_used.values()))

    assert wrong == {}, f"{len(wrong)} jobs not in their expected state: {list(wrong.items())[:10]}"
    assert s.stuck_jobs(db) == []
    assert len(workers_used) == n_workers, "every worker process took part"
    assert s.overlapping_attempts(attempts) == []
    assert s.missing_attempts(jobs, attempts) == []
    assert incidents == Counter(), f"lease incidents in a fault-free run: {incidents}"
    assert multi_success == []
    # The upstream's own count: one Billing write per success job, none for the others.
    assert sum(our_writes.values()) == len(success_ids)
    assert all(our_writes.get(jobs[j].correlation_id, 0) == 1 for j in success_ids)
    for jid, rows in attempts.items():
        assert [a.number for a in rows] == list(range(1, len(rows) + 1)), jid
        assert jobs[jid].attempt_count == len(rows), jid
    assert s.illegal_transitions(db) == []
