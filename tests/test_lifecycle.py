"""Every transition of the job lifecycle, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from sqlalchemy import func, select

import core.enqueue
from core import clock, completion, leases, operator_actions, reads
from core.config import Settings
from core.db import Database
from core.demo import registry
from core.errors import ControlError, DuplicateJob, InvalidInput, JobNotFound
from core.handlers import Registry
from core.integrations.errors import RetryableError
from core.integrations.mock import SCENARIOS, MockUpstream
from core.models import attempts_t, jobs_t
from core.records import ClaimedJob, Completion
from core.worker import Worker
from tests.helpers import async_wait_for

TYPES = registry.names()


def enqueue(db: Database, settings: Settings, job_type: str, entity: str) -> int:
    return core.enqueue.enqueue(db, job_type, entity, known_types=TYPES,
                         max_attempts=settings.max_attempts).job_id


def drain(db: Database, settings: Settings, **kwargs: object) -> Worker:
    worker = Worker(db, settings, mock=MockUpstream(), **kwargs)  # type: ignore[arg-type]
    asyncio.run(asyncio.wait_for(worker.run(until_empty=True), 60))
    return worker


def test_every_demo_scenario_ends_as_designed(db: Database, settings: Settings) -> None:
    # 429 with Retry-After: 1 wins over the tiny test backoff, so the dead scenarios take ~3s.
    ids = {entity: enqueue(db, settings, job_type, entity)
           for job_type, entity, _, _ in SCENARIOS}
    drain(db, settings)
    expected_attempts = {"success": None, "dead": settings.max_attempts, "failed": 1}
    for _job_type, entity, expected, _ in SCENARIOS:
        job = reads.get_job(db, ids[entity])
        assert job is not None
        assert job.status == expected, (entity, job.status, job.last_error)
        attempts = reads.attempts_for(db, job.id)
        assert [a.number for a in attempts] == list(range(1, len(attempts) + 1))
        assert all(a.worker_id and a.finished_at and a.duration_ms is not None
                   for a in attempts)
        if expected_attempts[expected] is not None:
            assert len(attempts) == expected_attempts[expected]
        if entity.endswith("_flaky"):
            assert [a.outcome for a in attempts] == ["retry", "retry", "success"]
            assert [a.http_status for a in attempts] == [503, 503, None]
            assert attempts[0].error_type == "UpstreamTimeout"
        if expected == "dead":
            assert job.dead_error_type == "UpstreamRateLimited"
            assert "429" in (job.dead_error or "")
            assert [a.outcome for a in attempts] == ["retry"] * 3 + ["dead"]
            # Retry-After: 1 is larger than the backoff, so it sets the delay.
            gaps = [b.started_at - a.finished_at for a, b in itertools.pairwise(attempts)]
            assert all(g >= 0.99 for g in gaps), gaps
        if entity == "c_missing":
            assert attempts[0].error_type == "NotFound" and attempts[0].http_status == 404
        if entity == "c_invalid":
            assert attempts[0].error_type == "ValidationError"
            assert "failed validation" in (attempts[0].error_message or "")
        if expected == "success":
            assert job.result and job.result["billing_id"].startswith("bill_")
    assert reads.is_drained(db)


def test_duplicate_enqueue_returns_existing_job(db: Database, settings: Settings) -> None:
    first = core.enqueue.enqueue(db, "customer", "c_1", known_types=TYPES, max_attempts=4)
    second = core.enqueue.enqueue(db, "customer", "c_1", known_types=TYPES, max_attempts=4)
    assert first.created and not second.created
    assert second.job_id == first.job_id
    # Another type for the same entity is a different job.
    other = core.enqueue.enqueue(db, "invoice", "c_1", known_types=TYPES, max_attempts=4)
    assert other.created and other.job_id != first.job_id


def test_finished_job_allows_a_new_one(db: Database, settings: Settings) -> None:
    job_id = enqueue(db, settings, "customer", "c_1001")
    drain(db, settings)
    again = core.enqueue.enqueue(db, "customer", "c_1001", known_types=TYPES, max_attempts=4)
    assert again.created and again.job_id != job_id


def test_bulk_enqueue_is_idempotent_and_validates_first(db: Database) -> None:
    results = core.enqueue.enqueue_many(db, "customer", ["c_1", "c_2", "c_1"], known_types=TYPES,
                                 max_attempts=4)
    assert [r.created for r in results] == [True, True, True]
    assert results[0].job_id == results[2].job_id
    again = core.enqueue.enqueue_many(db, "customer", ["c_2", "c_3"], known_types=TYPES,
                               max_attempts=4)
    assert [r.created for r in again] == [False, True]
    with pytest.raises(InvalidInput):
        core.enqueue.enqueue_many(db, "customer", ["c_4", "bad\x00id"], known_types=TYPES,
                           max_attempts=4)
    assert reads.count_jobs(db) == 3  # nothing of the bad batch was written


@pytest.mark.parametrize("bad", ["", "   ", "x" * 129, "a\nb", "tab\there", "\x1b[31m",
                                 " lead", "trail "])
def test_bad_entity_ids_are_refused(db: Database, bad: str) -> None:
    with pytest.raises(InvalidInput):
        core.enqueue.enqueue(db, "customer", bad, known_types=TYPES, max_attempts=4)
    assert reads.count_jobs(db) == 0


def test_unknown_job_type_is_refused(db: Database) -> None:
    with pytest.raises(InvalidInput, match="unknown job type"):
        core.enqueue.enqueue(db, "nope", "c_1", known_types=TYPES, max_attempts=4)


def test_claim_leases_fences_and_opens_attempt(db: Database, settings: Settings) -> None:
    job_id = enqueue(db, settings, "customer", "c_1001")
    claimed = leases.claim(db, "w1", 10, lease_seconds=30, job_types=TYPES)
    assert [j.id for j in claimed] == [job_id]
    assert claimed[0].lease_token == 1 and claimed[0].attempt_count == 1
    assert leases.claim(db, "w2", 10, lease_seconds=30, job_types=TYPES) == []
    job = reads.get_job(db, job_id)
    assert job and job.status == "running" and job.lease_owner == "w1"
    assert job.lease_expires_at and job.lease_expires_at > clock.now() + 29
    attempts = reads.attempts_for(db, job_id)
    assert [(a.number, a.outcome, a.worker_id) for a in attempts] == [(1, "running", "w1")]
    # The attempt in flight is the lease; its row is written once, when it ends.
    assert attempts[0].started_at == claimed[0].claimed_at and attempts[0].id == 0
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(attempts_t)).scalar() == 0


def test_claim_respects_batch_size_and_due_time(db: Database, settings: Settings) -> None:
    for i in range(5):
        enqueue(db, settings, "customer", f"c_{i}")
    assert len(leases.claim(db, "w", 3, lease_seconds=30, job_types=TYPES)) == 3
    assert len(leases.claim(db, "w", 3, lease_seconds=30, job_types=TYPES)) == 2
    # A job scheduled in the future is not claimed yet.
    job_id = enqueue(db, settings, "invoice", "i_9")
    with db.write() as conn:
        conn.execute(jobs_t.update().where(jobs_t.c.id == job_id)
                     .values(next_run_at=clock.now() + 60))
    assert leases.claim(db, "w", 3, lease_seconds=30, job_types=TYPES) == []


def _completion(job: ClaimedJob | object, outcome: str, worker_id: str = "w1",
                **kw: object) -> Completion:
    now = clock.now()
    return Completion(job_id=job.id, lease_token=job.lease_token, worker_id=worker_id,  # type: ignore[attr-defined]
                      outcome=outcome, started_at=now, finished_at=now, duration_ms=1.0,
                      **kw)  # type: ignore[arg-type]


def test_stale_completion_is_fenced_out(db: Database, settings: Settings) -> None:
    job_id = enqueue(db, settings, "customer", "c_1001")
    stale = leases.claim(db, "w1", 1, lease_seconds=0.01, job_types=TYPES)[0]
    # The lease expires; recovery returns the job and another worker claims it.
    clock.set_clock(lambda: stale.claimed_at + 1)
    assert leases.recover_expired(db) == [(job_id, "pending")]
    fresh = leases.claim(db, "w2", 1, lease_seconds=30, job_types=TYPES)[0]
    assert fresh.lease_token == 2
    assert completion.complete(db, [_completion(stale, "success", result={"x": 1})]) == [False]
    job = reads.get_job(db, job_id)
    assert job and job.status == "running" and job.lease_owner == "w2" and job.result is None
    assert completion.complete(db, [_completion(fresh, "success", "w2", result={"x": 2})]) == [True]
    job = reads.get_job(db, job_id)
    assert job and job.status == "success" and job.result == {"x": 2}
    outcomes = [(a.number, a.worker_id, a.outcome) for a in reads.attempts_for(db, job_id)]
    assert outcomes == [(1, "w1", "lease_lost"), (2, "w2", "success")]


def test_lease_expiry_closes_attempt_and_counts_against_budget(db: Database,
                                                                settings: Settings) -> None:
    job_id = enqueue(db, settings, "customer", "c_1001")
    t = clock.now()
    for n in range(1, settings.max_attempts + 1):
        claimed = leases.claim(db, f"w{n}", 1, lease_seconds=1, job_types=TYPES)
        assert [c.lease_token for c in claimed] == [n]
        t += 10
        clock.set_clock(lambda t=t: t)
        recovered = leases.recover_expired(db)
        expected = "dead" if n == settings.max_attempts else "pending"
        assert recovered == [(job_id, expected)]
    job = reads.get_job(db, job_id)
    assert job and job.status == "dead" and job.dead_error_type == "LeaseExpired"
    attempts = reads.attempts_for(db, job_id)
    assert [a.outcome for a in attempts] == ["lease_expired"] * settings.max_attempts


def test_worker_recovers_an_abandoned_lease(db: Database, settings: Settings) -> None:
    job_id = enqueue(db, settings, "customer", "c_1001")
    leases.claim(db, "dead-worker", 1, lease_seconds=0.05, job_types=TYPES)
    drain(db, settings)
    job = reads.get_job(db, job_id)
    assert job and job.status == "success"
    attempts = reads.attempts_for(db, job_id)
    assert [a.outcome for a in attempts] == ["lease_expired", "success"]
    assert attempts[0].worker_id == "dead-worker" and attempts[1].worker_id != "dead-worker"


def test_retry_keeps_history_and_refreshes_budget(db: Database, settings: Settings) -> None:
    job_id = enqueue(db, settings, "customer", "c_missing")
    drain(db, settings)
    assert reads.get_job(db, job_id).status == "failed"  # type: ignore[union-attr]
    operator_actions.retry(db, job_id, actor="tester")
    job = reads.get_job(db, job_id)
    assert job and job.status == "pending" and job.attempt_count == 0
    drain(db, settings)
    attempts = reads.attempts_for(db, job_id)
    assert [a.number for a in attempts] == [1, 2]
    assert [a.outcome for a in attempts] == ["failed", "failed"]
    audit = operator_actions.audit_log(db, job_id)
    assert audit[0]["action"] == "retry" and audit[0]["actor"] == "tester"


def test_illegal_transitions_say_why(db: Database, settings: Settings) -> None:
    job_id = enqueue(db, settings, "customer", "c_1001")
    with pytest.raises(ControlError, match="is pending"):
        operator_actions.retry(db, job_id)
    with pytest.raises(ControlError, match="is pending"):
        operator_actions.replay(db, job_id)
    drain(db, settings)
    with pytest.raises(ControlError, match="is success"):
        operator_actions.cancel(db, job_id)
    with pytest.raises(JobNotFound):
        operator_actions.retry(db, 999_999)
    assert operator_actions.audit_log(db) == []


def test_replay_links_and_leaves_original_untouched(db: Database, settings: Settings) -> None:
    job_id = enqueue(db, settings, "customer", "c_1002")
    drain(db, settings)
    before = reads.get_job(db, job_id)
    assert before and before.status == "dead"
    attempts = reads.attempts_for(db, job_id)
    new_id = operator_actions.replay(db, job_id, attempt_number=2, actor="tester")
    after = reads.get_job(db, job_id)
    assert after == before
    new = reads.get_job(db, new_id)
    assert new and new.status == "pending" and new.is_replay
    assert new.replay_of_job_id == job_id and new.replay_of_attempt_id == attempts[1].id
    assert new.correlation_id != before.correlation_id
    assert reads.replays_of(db, job_id) == [new_id]
    # A second replay while the first is active is refused by the idempotency index.
    with pytest.raises(DuplicateJob) as exc:
        operator_actions.replay(db, job_id)
    assert exc.value.existing_id == new_id
    with pytest.raises(ControlError, match="no attempt 9"):
        operator_actions.replay(db, job_id, attempt_number=9)
    assert [a["action"] for a in operator_actions.audit_log(db, job_id)] == ["replay"]


def test_retry_refused_while_another_job_is_active(db: Database, settings: Settings) -> None:
    job_id = enqueue(db, settings, "customer", "c_missing")
    drain(db, settings)
    other = enqueue(db, settings, "customer", "c_missing")
    with pytest.raises(DuplicateJob) as exc:
        operator_actions.retry(db, job_id)
    assert exc.value.existing_id == other
    assert reads.get_job(db, job_id).status == "failed"  # type: ignore[union-attr]


def test_cancel_pending_and_running(db: Database, settings: Settings) -> None:
    pending = enqueue(db, settings, "customer", "c_1")
    assert operator_actions.cancel(db, pending) == "pending"
    assert reads.get_job(db, pending).status == "canceled"  # type: ignore[union-attr]
    running_id = enqueue(db, settings, "customer", "c_2")
    claimed = leases.claim(db, "w1", 1, lease_seconds=30, job_types=TYPES)[0]
    assert operator_actions.cancel(db, running_id) == "running"
    # The worker's late result is discarded.
    assert completion.complete(db, [_completion(claimed, "success", result={})]) == [False]
    job = reads.get_job(db, running_id)
    assert job and job.status == "canceled" and job.result is None
    assert [a.outcome for a in reads.attempts_for(db, running_id)] == ["canceled"]
    # Renewal tells the worker it no longer holds the job.
    assert leases.renew_leases(db, "w1", {running_id: 1}, 30) == set()


def test_running_cancel_stops_the_handler(db: Database, settings: Settings) -> None:
    started = asyncio.Event()
    finished: list[str] = []
    reg = Registry()

    @reg.job_type("slow")
    async def slow(ctx: object) -> dict[str, str]:
        started.set()
        await asyncio.sleep(30)
        finished.append("done")
        return {}

    job_id = core.enqueue.enqueue(db, "slow", "e1", known_types=["slow"], max_attempts=4).job_id
    worker = Worker(db, settings, registry=reg, mock=MockUpstream())

    async def scenario() -> None:
        task = asyncio.create_task(worker.run())
        await asyncio.wait_for(started.wait(), 10)
        await asyncio.to_thread(operator_actions.cancel, db, job_id)
        # The lease check notices the cancel and stops the handler.
        await async_wait_for(lambda: worker.in_flight == 0, 10, message="the handler stopped")
        worker.request_stop()
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())
    assert finished == []
    job = reads.get_job(db, job_id)
    assert job and job.status == "canceled"
    assert [a.outcome for a in reads.attempts_for(db, job_id)] == ["canceled"]


def test_shutdown_releases_without_spending_budget(db: Database, settings: Settings) -> None:
    reg = Registry()
    started = asyncio.Event()

    @reg.job_type("hang")
    async def hang(ctx: object) -> None:
        started.set()
        await asyncio.sleep(60)

    job_id = core.enqueue.enqueue(db, "hang", "e1", known_types=["hang"], max_attempts=4).job_id
    fast = settings.model_copy(update={"shutdown_timeout_seconds": 0.2})
    worker = Worker(db, fast, registry=reg, mock=MockUpstream())

    async def scenario() -> None:
        task = asyncio.create_task(worker.run())
        await asyncio.wait_for(started.wait(), 10)
        worker.request_stop()
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())
    job = reads.get_job(db, job_id)
    assert job and job.status == "pending" and job.attempt_count == 0 and job.lease_owner is None
    assert [a.outcome for a in reads.attempts_for(db, job_id)] == ["released"]
    assert worker.stats.released == 1


@pytest.mark.parametrize(
    ("error", "status", "error_type", "outcomes"),
    [(RetryableError("try later"), "dead", "RetryableError", ["retry", "retry", "dead"]),
     (KeyError("missing"), "failed", "KeyError", ["failed"])],
    ids=["retryable-backs-off-then-dies", "handler-bug-fails-job-not-worker"],
)
def test_user_handler_errors(db: Database, settings: Settings, error: Exception, status: str,
                             error_type: str, outcomes: list[str]) -> None:
    reg = Registry()

    @reg.job_type("mine")
    async def mine(ctx: object) -> None:
        raise error

    job_id = core.enqueue.enqueue(db, "mine", "e1", known_types=["mine"], max_attempts=3).job_id
    drain(db, settings, registry=reg)
    job = reads.get_job(db, job_id)
    assert job and job.status == status and job.last_error_type == error_type
    if status == "dead":
        assert job.dead_error_type == error_type
    assert [a.outcome for a in reads.attempts_for(db, job_id)] == outcomes


def test_correlation_id_reaches_both_upstreams(db: Database, settings: Settings) -> None:
    mock = MockUpstream()
    job_id = enqueue(db, settings, "customer", "c_1001")
    worker = Worker(db, settings, mock=mock)
    asyncio.run(asyncio.wait_for(worker.run(until_empty=True), 30))
    job = reads.get_job(db, job_id)
    assert job and job.status == "success"
    assert mock.billing_writes == {job.correlation_id: 1}


def test_leases_are_renewed_while_a_long_job_runs(db: Database, settings: Settings) -> None:
    """A job that runs for several lease lengths keeps its lease (renewed by the heartbeat)
    even with another worker recovering expired leases all the while."""
    reg = Registry()

    @reg.job_type("long")
    async def long(ctx: object) -> dict[str, bool]:
        await asyncio.sleep(1.5)
        return {"ok": True}

    short = settings.model_copy(update={"lease_seconds": 0.4})
    job_id = core.enqueue.enqueue(db, "long", "e1", known_types=["long"], max_attempts=4).job_id
    runner = Worker(db, short, registry=reg, mock=MockUpstream())
    rival = Worker(db, short, registry=reg, mock=MockUpstream())

    async def scenario() -> None:
        first = asyncio.create_task(runner.run(until_empty=True))
        await async_wait_for(lambda: runner.in_flight or first.done(), 10,
                             interval=0.01, message="the runner mid-attempt")
        second = asyncio.create_task(rival.run(until_empty=True))
        await asyncio.wait_for(asyncio.gather(first, second), 30)

    asyncio.run(scenario())
    job = reads.get_job(db, job_id)
    assert job and job.status == "success"
    attempts = reads.attempts_for(db, job_id)
    assert [(a.outcome, a.worker_id) for a in attempts] == [("success", runner.id)]


def test_search_by_entity_prefix_job_id_and_correlation(db: Database) -> None:
    made = {e: core.enqueue.enqueue(db, "customer", e, known_types=TYPES, max_attempts=4).job_id
            for e in ["c_10", "c_100", "cx10", "c%1", "d_1"]}
    corr = reads.get_job(db, made["d_1"]).correlation_id  # type: ignore[union-attr]

    def found(term: str, sort: str = "age") -> list[int]:
        return [j.id for j in reads.list_jobs(db, reads.JobFilter(search=term), sort=sort)]

    assert found("c_10") == [made["c_100"], made["c_10"]]  # "_" is literal, not a wildcard
    assert found("c%") == [made["c%1"]]  # so is "%"
    assert found(str(made["cx10"])) == [made["cx10"]]
    assert found(corr[:6]) == [made["d_1"]]
    assert found(corr) == [made["d_1"]]
    assert found("nothing-like-it") == []
    assert found("a\x00b") == []
    assert reads.count_jobs(db, reads.JobFilter(search="c")) == 4
    # Running jobs are not in the search indexes (migration 0005); the search still finds
    # them, by entity prefix, exact entity, correlation prefix and id.
    leases.claim(db, "w1", 10, lease_seconds=30, job_types=TYPES)
    assert {j.status for j in reads.list_jobs(db)} == {"running"}
    assert found("c_10") == [made["c_100"], made["c_10"]]
    assert found("cx10") == [made["cx10"]]
    assert found(corr[:6]) == [made["d_1"]]
    assert found(str(made["d_1"])) == [made["d_1"]]
    assert reads.count_jobs(db, reads.JobFilter(search="c")) == 4
    assert reads.count_jobs(db, newer_than=made["c%1"]) == 1
    # From the end: the same order, the last page first (G in the console).
    for sort in ("age", "oldest", "type"):
        whole = [j.id for j in reads.list_jobs(db, sort=sort)]
        assert [j.id for j in reads.list_jobs(db, limit=2, sort=sort, from_end=True)] == whole[-2:]
        assert [j.id for j in reads.list_jobs(db, limit=2, offset=1, sort=sort,
                                              from_end=True)] == whole[-3:-1]
    by_type = reads.list_jobs(db, sort="type")
    assert [j.id for j in by_type] == sorted(made.values(), reverse=True)
