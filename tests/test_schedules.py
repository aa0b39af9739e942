"""Scheduled work (run_at) and recurring schedules, on SQLite and PostgreSQL: a delayed job
is not claimed before its time; a schedule's slot is enqueued once across many workers;
a restart after downtime enqueues the latest slot only; a slot whose previous job is still
active is recorded as skipped (job_id NULL)."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

import core.enqueue
from core import clock, leases, operator_actions, reads, schedules
from core.config import Settings
from core.db import Database
from core.errors import InvalidInput
from core.handlers import JobContext, Registry
from core.models import jobs_t, schedule_slots_t
from core.schedules import make_schedule, parse_duration, parse_instant
from core.worker import Worker
from tests.helpers import async_wait_for

T0 = datetime(2026, 12, 2, 9, 0, 0, tzinfo=UTC).timestamp()  # on every slot boundary


# --- parsing and slot arithmetic (no database) ------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("10m", 600), ("2h", 7200),
                                               ("1d", 86400), (" 1.5m ", 90)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "m", "-5m", "0s", "10 minutes", "1w", "1e3s"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(InvalidInput, match="bad duration"):
        parse_duration(text)


def test_parse_instant() -> None:
    assert parse_instant("2026-12-02T09:00:00Z") == T0
    assert parse_instant("2026-12-02T10:00:00+01:00") == T0
    for bad in ("2026-12-02T09:00:00", "tomorrow", "2026-13-02T09:00:00Z"):
        with pytest.raises(InvalidInput, match="bad time"):
            parse_instant(bad)


def test_every_and_cron_slots() -> None:
    every = make_schedule("tick", "customer", every="10m")
    assert every.entity_id == "tick" and every.spec == "every 10m"
    assert every.latest_slot(T0) == T0  # a slot at `now` is due
    assert every.latest_slot(T0 + 599) == T0
    assert every.next_slot(T0) == T0 + 600
    cron = make_schedule("c", "customer", cron="*/5  * * * *", entity_id="c_1")
    assert cron.spec == "cron */5 * * * *"
    assert cron.latest_slot(T0) == T0
    assert cron.latest_slot(T0 + 299.5) == T0
    assert cron.next_slot(T0) == T0 + 300
    assert cron.next_slot(T0 + 0.5) == T0 + 300


@pytest.mark.parametrize(("kwargs", "match"), [
    ({}, "exactly one"),
    ({"every": "10m", "cron": "* * * * *"}, "exactly one"),
    ({"every": "soon"}, "bad duration"),
    ({"cron": "*/5 * * *"}, "bad cron"),
    ({"cron": "0 0 * * * *"}, "bad cron"),  # six fields: seconds are not a slot here
    ({"every": "1m", "entity_id": " x"}, "white space"),
])
def test_bad_declarations_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Registry().recurring("r", "customer", **kwargs)


# --- the tick -----------------------------------------------------------------------------------

def _slots(db: Database) -> list[tuple[str, float, int | None]]:
    with db.read() as conn:
        return [tuple(r) for r in conn.execute(  # type: ignore[misc]
            select(schedule_slots_t.c.schedule, schedule_slots_t.c.slot_at,
                   schedule_slots_t.c.job_id).order_by(schedule_slots_t.c.slot_at))]


def _job_count(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(jobs_t)).scalar_one())


def test_tick_once_per_slot_skips_while_active_and_never_catches_up(db: Database) -> None:
    s = make_schedule("nightly", "customer", every="1h", entity_id="c_1001",
                      payload={"full": True})
    [first] = schedules.tick(db, [s], max_attempts=4, now=T0 + 10)
    assert first.slot_at == T0 and first.job_id is not None
    job = reads.get_job(db, first.job_id)
    assert job is not None and (job.job_type, job.entity_id, job.status, job.payload) == (
        "customer", "c_1001", "pending", {"full": True})
    assert schedules.tick(db, [s], max_attempts=4, now=T0 + 20) == []  # same slot: nothing
    # Next slot, previous job still pending: the slot is recorded as skipped.
    [skipped] = schedules.tick(db, [s], max_attempts=4, now=T0 + 3600)
    assert skipped.job_id is None and _job_count(db) == 1
    operator_actions.cancel(db, first.job_id)
    # Ten hours of downtime: one job for the latest slot, no burst of the nine missed ones.
    [late] = schedules.tick(db, [s], max_attempts=4, now=T0 + 10 * 3600 + 5)
    assert late.slot_at == T0 + 10 * 3600 and late.job_id is not None
    assert _job_count(db) == 2
    assert _slots(db) == [("nightly", T0, first.job_id), ("nightly", T0 + 3600, None),
                          ("nightly", T0 + 36000, late.job_id)]
    # A worker whose clock lags behind does not insert an older slot.
    assert schedules.tick(db, [s], max_attempts=4, now=T0 + 5 * 3600) == []
    states = schedules.schedule_states(db, [s], now=T0 + 36000 + 5)
    assert [(st.last_slot_at, st.last_job_id, st.last_job_status, st.next_slot)
            for st in states] == [(T0 + 36000, late.job_id, "pending", T0 + 39600)]


def test_racing_workers_enqueue_a_slot_once(db: Database, db_url: str) -> None:
    """Eight threads, each with its own connection pool, tick the same slot at once (the
    `db` fixture has migrated the database)."""
    s = make_schedule("report", "invoice", every="5m")
    dbs = [Database(db_url) for _ in range(8)]
    barrier = threading.Barrier(len(dbs))
    results: list[list[schedules.SlotOutcome]] = []

    def run(d: Database) -> None:
        barrier.wait()
        results.append(schedules.tick(d, [s], max_attempts=4, now=T0 + 1))

    threads = [threading.Thread(target=run, args=(d,)) for d in dbs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for d in dbs:
        d.dispose()
    inserted = [o for r in results for o in r]
    assert len(results) == 8 and len(inserted) == 1 and inserted[0].job_id is not None
    check = Database(db_url)
    try:
        assert _job_count(check) == 1
        assert _slots(check) == [("report", T0, inserted[0].job_id)]
    finally:
        check.dispose()


# --- with real workers --------------------------------------------------------------------------

def _registry(seen: list[str]) -> Registry:
    reg = Registry()

    @reg.job_type("ping")
    async def ping(ctx: JobContext) -> dict[str, Any]:
        seen.append(ctx.entity_id)
        return {"ok": True}

    return reg


def _status(db: Database, job_id: int) -> str | None:
    job = reads.get_job(db, job_id)
    return job.status if job else None


def test_delayed_job_is_not_claimed_before_its_time(db: Database, settings: Settings,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    now = [T0]
    clock.set_clock(lambda: now[0])
    seen: list[str] = []
    reg = _registry(seen)
    claims: list[list[int]] = []  # the ids each claim the worker made returned
    real_claim = leases.claim

    def counting_claim(*args: Any, **kwargs: Any) -> Any:
        jobs = real_claim(*args, **kwargs)
        claims.append([j.id for j in jobs])
        return jobs

    monkeypatch.setattr(leases, "claim", counting_claim)
    delayed = core.enqueue.enqueue(db, "ping", "later", known_types=["ping"], max_attempts=4,
                                   run_at=T0 + 600).job_id

    async def scenario() -> None:
        worker = Worker(db, settings, registry=reg)
        task = asyncio.create_task(worker.run())
        try:
            marker = core.enqueue.enqueue(db, "ping", "now", known_types=["ping"],
                                          max_attempts=4).job_id
            await async_wait_for(lambda: _status(db, marker) == "success",
                                 message="the job due now to finish")
            # Five more claims after that one: each one passed over the delayed job.
            after = len(claims)
            await async_wait_for(lambda: len(claims) >= after + 5, message="five more claims")
            assert all(delayed not in ids for ids in claims)
            job = reads.get_job(db, delayed)
            assert job is not None and (job.status, job.attempt_count) == ("pending", 0)
            assert reads.attempts_for(db, delayed) == [] and seen == ["now"]
            now[0] = T0 + 600  # its time comes
            worker.resume()  # wake it instead of waiting for the next poll
            await async_wait_for(lambda: _status(db, delayed) == "success",
                                 message="the delayed job to run once due")
            assert seen == ["now", "later"]
            assert sum(ids.count(delayed) for ids in claims) == 1
        finally:
            worker.request_stop()
            await asyncio.wait_for(task, 30)

    asyncio.run(scenario())


def test_two_workers_run_a_recurring_slot_once(db: Database, settings: Settings) -> None:
    now = [T0 + 30]
    clock.set_clock(lambda: now[0])
    seen: list[str] = []
    reg = _registry(seen)
    reg.recurring("heartbeat-sync", "ping", every="1h")
    reg.recurring("broken", "no-such-type", every="1h")  # logged and ignored

    async def scenario() -> None:
        workers = [Worker(db, settings, registry=reg) for _ in range(2)]
        tasks = [asyncio.create_task(w.run()) for w in workers]
        try:
            await async_wait_for(lambda: seen == ["heartbeat-sync"] and _done_slots(db) == 1,
                                 message="the first slot's job to run")
            now[0] = T0 + 3600 + 1  # the next slot: again exactly one job
            await async_wait_for(lambda: len(seen) == 2 and _done_slots(db) == 2,
                                 message="the second slot's job to run")
        finally:
            for w in workers:
                w.request_stop()
            await asyncio.wait_for(asyncio.gather(*tasks), 30)

    asyncio.run(scenario())
    assert seen == ["heartbeat-sync", "heartbeat-sync"]
    assert [(name, at) for name, at, _ in _slots(db)] == [("heartbeat-sync", T0),
                                                          ("heartbeat-sync", T0 + 3600)]
    assert _job_count(db) == 2


def _done_slots(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(
            select(func.count()).select_from(schedule_slots_t.join(
                jobs_t, jobs_t.c.id == schedule_slots_t.c.job_id))
            .where(jobs_t.c.status == "success")).scalar_one())
