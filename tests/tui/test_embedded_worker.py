"""The console with its real embedded worker (real clock): pause/resume with `w`, and
quitting with `q` while a job runs leaves nothing `running` with a live lease."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import clock, queue
from core.config import Settings, load_settings
from core.db import Database
from core.handlers import JobContext, registry
from core.migrations import upgrade
from syncbridge_tui.app import ConsoleOptions, SyncBridgeApp, create_app
from syncbridge_tui.screenshots import SIZE, settle, wait_until

pytestmark = pytest.mark.anyio

slow_registry = registry.copy()


@slow_registry.job_type("slow")
async def _slow(ctx: JobContext) -> dict[str, str]:
    await asyncio.sleep(60)  # only ever stopped by the shutdown
    return {"never": "reached"}


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[tuple[Settings, Database]]:
    settings = load_settings(database_url=f"sqlite:///{tmp_path}/console.db",
                             job_backoff_seconds_base=0.01, job_backoff_seconds_cap=0.05,
                             lease_seconds=3, poll_seconds=0.02, shutdown_timeout_seconds=0.3)
    db = Database(settings.database_url)
    upgrade(db)
    yield settings, db
    db.dispose()


def make(settings: Settings, db: Database) -> SyncBridgeApp:
    return create_app(settings, ConsoleOptions(
        live=False, blink=False, keymap={}, configure_logging=True,
        worker_kwargs={"registry": slow_registry}), db=db)


def status(db: Database, job_id: int) -> str:
    job = queue.get_job(db, job_id)
    assert job is not None
    return job.status


def enqueue(db: Database, job_type: str, entity: str) -> int:
    return queue.enqueue(db, job_type, entity, known_types=slow_registry.names(),
                         max_attempts=4).job_id


async def test_pause_and_resume(fresh: tuple[Settings, Database]) -> None:
    settings, db = fresh
    app = make(settings, db)
    async with app.run_test(size=SIZE) as pilot:
        engine = app.engine
        assert engine is not None
        await wait_until(pilot, lambda: engine.state == "running", what="the worker")
        first = enqueue(db, "customer", "c_1001")
        await wait_until(pilot, lambda: status(db, first) == "success", what="a first job")
        await pilot.press("w")
        assert engine.state == "paused"
        await settle(pilot)
        assert app.header_info().worker == "paused"
        # The worker's next heartbeat says paused: from then on it claims nothing.
        await wait_until(pilot, lambda: any(w.state == "paused"
                                            for w in queue.list_workers(db)),
                         what="a paused heartbeat")
        held = enqueue(db, "customer", "c_1002x")
        since = clock.now()
        # A heartbeat after the enqueue: the claim loop (every 20 ms) had ~50 chances.
        await wait_until(pilot, lambda: any(w.last_seen_at > since
                                            for w in queue.list_workers(db)),
                         what="a heartbeat after the enqueue")
        assert status(db, held) == "pending"
        await pilot.press("w")
        assert engine.state == "running"
        await wait_until(pilot, lambda: status(db, held) in ("success", "failed"),
                         what="the held job to run after resume")


async def test_quit_leaves_no_live_lease(fresh: tuple[Settings, Database]) -> None:
    settings, db = fresh
    app = make(settings, db)
    async with app.run_test(size=SIZE) as pilot:
        engine = app.engine
        assert engine is not None
        job_id = enqueue(db, "slow", "s_1")
        await wait_until(pilot, lambda: status(db, job_id) == "running", what="a running job")
        await pilot.press("q")
        await wait_until(pilot, lambda: engine.done.is_set(), what="the worker to stop")
    assert not app.is_running
    job = queue.get_job(db, job_id)
    assert job is not None
    assert job.status == "pending" and job.lease_owner is None  # released, not left running
    assert job.attempt_count == 0  # the interrupted attempt is not counted
    assert [a.outcome for a in queue.attempts_for(db, job_id)] == ["released"]
    assert [w.state for w in queue.list_workers(db)] == ["stopped"]


async def test_paced_demo_upstream_shows_jobs_running(fresh: tuple[Settings, Database]) -> None:
    """On a first demo run the console's worker talks to a slower mock: `running` is
    visible in the jobs pane before `success`."""
    from syncbridge_tui.demo_upstream import PacedMockUpstream
    from syncbridge_tui.widgets.job_list import JobList

    settings, db = fresh
    app = create_app(settings, ConsoleOptions(
        live=False, blink=False, keymap={}, configure_logging=False,
        worker_kwargs={"mock": PacedMockUpstream(latency=(0.3, 0.3))}), db=db)
    async with app.run_test(size=SIZE) as pilot:
        job_id = enqueue(db, "customer", "c_1001")
        jobs = app.screen.query_one(JobList)

        async def shown() -> str | None:
            await settle(pilot)
            return next((j.status for j in jobs.jobs if j.id == job_id), None)

        seen = []
        deadline = asyncio.get_running_loop().time() + 10
        while "success" not in seen and asyncio.get_running_loop().time() < deadline:
            status = await shown()
            if status and (not seen or seen[-1] != status):
                seen.append(status)
        assert "running" in seen and seen[-1] == "success", seen
