"""The Python API (core.client.SyncBridge), sync and async, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from core import reads
from core.client import SyncBridge
from core.db import Database
from core.errors import JobNotFound
from core.integrations.clients import UpstreamConfigError
from tests.apps.sbtestapp import registry as app

FAST: dict[str, Any] = dict(poll_seconds=0.02, job_backoff_seconds_base=0.01,
                            job_backoff_seconds_cap=0.02)


@pytest.fixture(autouse=True)
def _ledger_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SBTEST_LEDGER_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("SBTEST_LEDGER_TOKEN", "x")


def wait_for(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_settings_in_code_win_over_the_environment(
        db_url: str, db: Database, tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCBRIDGE_DATABASE_URL", f"sqlite:///{tmp_path}/elsewhere.db")
    monkeypatch.setenv("SYNCBRIDGE_CONCURRENCY", "3")
    monkeypatch.setenv("SYNCBRIDGE_DEMO", "1")
    with SyncBridge(db_url, app=app, concurrency=5, demo=False) as sb:
        assert sb.settings.database_url == db_url
        assert (sb.settings.concurrency, sb.settings.demo) == (5, False)
        r = sb.enqueue("echo", "e1")
    assert reads.get_job(db, r.job_id) is not None  # it went where the code said
    # A complete Settings object is taken as it is, and overrides apply on top of it.
    base = SyncBridge(db_url, app=app).settings
    monkeypatch.setenv("SYNCBRIDGE_MAX_RETRIES", "9")
    sb = SyncBridge(settings=base, concurrency=2)
    assert (sb.settings.database_url, sb.settings.max_retries, sb.settings.concurrency) == (
        db_url, base.max_retries, 2)
    # from_env reads the environment (what the code did not give).
    monkeypatch.setenv("SYNCBRIDGE_DATABASE_URL", db_url)
    assert SyncBridge.from_env(app=app).settings.max_retries == 9


def test_sync_api_end_to_end(db_url: str) -> None:
    with SyncBridge(db_url, app=app, **FAST) as sb:
        assert sb.job_types() == ["echo", "flaky", "hang", "later", "ledger"]
        one = sb.enqueue("echo", "e1", payload={"a": 1})
        assert one.created
        assert sb.enqueue("echo", "e1").job_id == one.job_id  # idempotent while active
        many = sb.enqueue_many("echo", [("e2", {"b": 2}), "e3", ("e4", None)],
                               payload={"default": True})
        assert [r.entity_id for r in many] == ["e2", "e3", "e4"]
        assert sb.get(one.job_id).max_attempts == 4
        flaky = sb.enqueue("flaky", "f1")
        assert sb.get(flaky.job_id).max_attempts == 3  # the type's budget

        stats = sb.run_worker(until_empty=True)
        assert stats.processed == 4 + 3

        assert sb.get(one.job_id).result == {"entity": "e1", "payload": {"a": 1},
                                             "attempt": 1}
        payloads = {j.entity_id: j.payload for j in sb.list(job_type="echo")}
        assert payloads == {"e1": {"a": 1}, "e2": {"b": 2}, "e3": {"default": True},
                            "e4": None}
        assert [j.id for j in sb.list(status="dead")] == [flaky.job_id]
        assert [a.outcome for a in sb.attempts(flaky.job_id)] == ["retry", "retry", "dead"]
        m = sb.metrics()
        assert m.per_type["echo"].by_status["success"] == 4
        assert m.per_type["hang"].total_jobs == 0  # the app's types, with or without jobs

        new_id = sb.replay(flaky.job_id)
        assert sb.get(new_id).max_attempts == 3 and sb.get(new_id).replay_of_job_id == flaky.job_id
        assert sb.cancel(new_id) == "pending"
        sb.retry(flaky.job_id)
        assert sb.get(flaky.job_id).status == "pending"
        with pytest.raises(JobNotFound):
            sb.get(10**6)


def test_run_worker_runs_until_stopped(db_url: str) -> None:
    with SyncBridge(db_url, app=app, **FAST) as sb:
        result: list[object] = []
        thread = threading.Thread(target=lambda: result.append(sb.run_worker()), daemon=True)
        thread.start()
        job = sb.enqueue("echo", "live")
        wait_for(lambda: sb.get(job.job_id).status == "success", 20, "the job to run")
        assert thread.is_alive()  # not until_empty: it keeps waiting for work
        sb.stop()
        thread.join(20)
        assert not thread.is_alive() and len(result) == 1


def test_async_api_end_to_end(db_url: str) -> None:
    async def main() -> None:
        sb = SyncBridge(db_url, app=app, **FAST)
        async with sb.aio as aio:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.005)

            tick_task = asyncio.create_task(ticker())
            r = await aio.enqueue("echo", "a1", payload={"x": 1})
            rs = await aio.enqueue_many("echo", ["a2", "a3"])
            assert len(rs) == 2
            stats = await aio.run_worker(until_empty=True)
            assert stats.succeeded == 3
            job = await aio.get(r.job_id)
            assert job.status == "success" and job.result is not None
            assert len(await aio.list(job_type="echo")) == 3
            assert [a.outcome for a in await aio.attempts(r.job_id)] == ["success"]
            assert (await aio.metrics()).per_type["echo"].total_jobs == 3
            tick_task.cancel()
            assert ticks > 1  # the loop kept running while the worker and the reads did

    asyncio.run(main())


def test_run_worker_refuses_without_an_upstream_url(db_url: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SBTEST_LEDGER_URL")
    with SyncBridge(db_url, app=app) as sb, pytest.raises(UpstreamConfigError,
                                                          match="upstream 'ledger'"):
        sb.run_worker(until_empty=True)


def test_lease_recovery_uses_the_job_types_backoff(db_url: str, db: Database) -> None:
    from core import clock, leases
    from core.handlers import Registry
    from core.retry_policy import Backoff

    reg = Registry()

    @reg.job_type("slowpoke", backoff_base=100, backoff_cap=100, max_attempts=5)
    async def slowpoke(ctx: Any) -> None:
        return None

    with SyncBridge(db_url, app=reg) as sb:
        job = sb.enqueue("slowpoke", "s1")
        [claimed] = leases.claim(db, "gone-worker", 1, lease_seconds=0.05,
                                 job_types=["slowpoke"])
        wait_for(lambda: clock.now() > claimed.claimed_at + 0.1, 5, "the lease to expire")
        before = clock.now()
        backoffs = {"slowpoke": reg.policy("slowpoke", sb.settings).backoff}
        assert leases.recover_expired(db, backoff=Backoff(0, 0), backoffs=backoffs) == [
            (job.job_id, "pending")]
        assert sb.get(job.job_id).next_run_at >= before + 100
