"""Issue 4, point 8: operators racing each other and the workers.

Four operator threads fire retry, cancel, replay and enqueue at random jobs of a dozen
entities for several seconds while two worker processes run them (404s that fail at once,
5xx that die after their budget, slow jobs that are canceled mid-attempt, plain successes).
A database trigger records every status change; a sampler looks for two active jobs of one
entity every few milliseconds. Properties: never two active jobs per entity, no illegal
transition, every accepted operation audited exactly once and matching the recorded moves,
no job succeeding twice, nothing left running.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter

import pytest
from sqlalchemy import select

from core import enqueue, operator_actions
from core.demo import registry
from core.errors import ControlError, DuplicateJob
from core.models import audit_t, jobs_t
from tests.helpers import wait_for
from tests.reliability import _support as s
from tests.reliability.conftest import backend

pytestmark = pytest.mark.slow

ENTITIES = [("customer", f"u_{k}") for k in range(6)] + [
    ("customer", "x_500"), ("invoice", "x_503"), ("customer", "x_slow"),
    ("customer", "c_70001"), ("invoice", "i_70002"), ("invoice", "x_400")]
RACE_SECONDS = 6.0


def test_operators_race_each_other_and_the_workers(db_url, transition_log, upstream, procs,
                                                   record):
    db = transition_log
    ids: list[int] = []
    for job_type, entity in ENTITIES:
        ids += s.enqueue(db, job_type, [entity], max_attempts=2)
    lock = threading.Lock()
    spec = s.WorkerSpec(lease_seconds=2, concurrency=8)
    workers = [s.start_worker(procs, f"w{i}", db_url, upstream, spec=spec, max_seconds=120)
               for i in range(2)]
    for w in workers:
        s.wait_running(procs, w, db)

    stop = threading.Event()
    accepted: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    errors: list[str] = []
    dup_seen: list[object] = []
    samples = [0]

    def operator(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            op = rng.choice(["retry", "cancel", "replay", "enqueue"])
            with lock:
                job_id = rng.choice(ids)
            try:
                if op == "retry":
                    operator_actions.retry(db, job_id, actor=f"op{seed}")
                elif op == "cancel":
                    operator_actions.cancel(db, job_id, actor=f"op{seed}")
                elif op == "replay":
                    new = operator_actions.replay(db, job_id, actor=f"op{seed}")
                    with lock:
                        ids.append(new)
                else:
                    job_type, entity = rng.choice(ENTITIES)
                    r = enqueue.enqueue(db, job_type, entity, known_types=registry.names(),
                                      max_attempts=2)
                    if not r.created:
                        refused[op] += 1
                        continue
                    with lock:
                        ids.append(r.job_id)
                accepted[op] += 1
            except (ControlError, DuplicateJob):
                refused[op] += 1
            except Exception as exc:  # anything else is a failure of the engine
                errors.append(f"{op} {job_id}: {type(exc).__name__}: {exc}")

    def sampler() -> None:
        while not stop.is_set():
            found = s.duplicate_active_entities(db)
            samples[0] += 1
            if found:
                dup_seen.append(found)
            time.sleep(0.005)

    threads = [threading.Thread(target=operator, args=(k,)) for k in range(4)]
    threads.append(threading.Thread(target=sampler))
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + RACE_SECONDS
        while time.monotonic() < deadline and not errors:
            procs.check_deadlines()
            time.sleep(0.1)  # the race runs this long; nothing waits on it
    finally:
        stop.set()
        for t in threads:
            t.join(30)

    wait_for(lambda: s.drained(db) and procs.check_deadlines() is None, timeout=60,
             message="the workers to finish what the operators left")
    for w in workers:
        w.signal(signal.SIGTERM)
    for w in workers:
        assert w.wait(20) == 0, w.tail()
    assert not procs.tracebacks(), procs.tails()

    moves = s.transitions(db)
    jobs, attempts = s.all_jobs(db), s.all_attempts(db)
    with db.read() as conn:
        audit = Counter(r.action for r in conn.execute(select(audit_t)))
        replays = conn.execute(select(jobs_t.c.id).where(jobs_t.c.is_replay)).all()
    retried = sum(1 for _, old, new in moves if old in ("failed", "dead") and new == "pending")
    canceled = sum(1 for _, _, new in moves if new == "canceled")
    multi = [j for j, rows in attempts.items() if sum(a.outcome == "success" for a in rows) > 1]
    unwritten = s.missing_attempts(jobs, attempts)
    record(backend=backend(db_url), entities=len(ENTITIES), jobs=len(jobs), workers=2,
           operators=4, race_seconds=RACE_SECONDS, accepted=dict(accepted),
           refused=dict(refused), transitions=len(moves),
           moves=dict(Counter(f"{o}->{n}" for _, o, n in moves)),
           duplicate_active_samples=samples[0], duplicate_active_seen=len(dup_seen),
           illegal_transitions=len(s.illegal_transitions(db)), errors=len(errors),
           final=dict(Counter(j.status for j in jobs.values())), lost=len(set(ids) - set(jobs)),
           duplicated=len(multi), stuck=len(s.stuck_jobs(db)))

    assert errors == []
    assert dup_seen == [], f"two active jobs for one entity: {dup_seen[:3]}"
    assert s.duplicate_active_entities(db) == []
    assert s.illegal_transitions(db) == []
    assert sum(accepted.values()) > 20 and sum(refused.values()) > 20, "the race was real"
    assert audit["retry"] == accepted["retry"] == retried
    assert audit["cancel"] == accepted["cancel"] == canceled
    assert audit["replay"] == accepted["replay"] == len(replays)
    assert multi == []
    assert unwritten == []
    assert s.stuck_jobs(db) == []
