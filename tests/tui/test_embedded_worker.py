"""The console with its real embedded worker, which runs in a child process (real clock):
pause/resume with `w` reach the child, a cancel from the console stops the child's running
handler at once, the child's log lines reach the log pane, a job the console enqueues
wakes the child, quitting with `q` while a job runs leaves no live lease and no process,
and a console that dies takes its worker down with it (leases released)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import core.enqueue
from core import clock, heartbeats, reads
from core.config import Settings, load_settings
from core.db import Database
from core.migrations import upgrade
from syncbridge_tui.app import ConsoleOptions, SyncBridgeApp, create_app
from syncbridge_tui.engine import LogLine
from syncbridge_tui.screenshots import SIZE, settle, wait_until
from tests.helpers import async_wait_for
from tests.tui.worker_jobs import slow_registry

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
THROUGHPUT_WINDOW_SECONDS = 5.0  # core Worker.throughput's window


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = dict(
        database_url=f"sqlite:///{tmp_path}/console.db", demo=True, job_backoff_seconds_base=0.01,
        job_backoff_seconds_cap=0.05, lease_seconds=3, poll_seconds=0.02,
        shutdown_timeout_seconds=0.3)
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[tuple[Settings, Database]]:
    settings = settings_for(tmp_path)
    db = Database(settings.database_url)
    upgrade(db)
    yield settings, db
    db.dispose()


def make(settings: Settings, db: Database, **worker_kwargs: object) -> SyncBridgeApp:
    return create_app(settings, ConsoleOptions(
        live=False, blink=False, keymap={}, configure_logging=True,
        worker_kwargs={"registry": slow_registry, **worker_kwargs}), db=db)


def status(db: Database, job_id: int) -> str:
    job = reads.get_job(db, job_id)
    assert job is not None
    return job.status


def enqueue(db: Database, job_type: str, entity: str, payload: dict[str, str] | None = None
            ) -> int:
    return core.enqueue.enqueue(db, job_type, entity, known_types=slow_registry.names(),
                         max_attempts=4, payload=payload).job_id


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie (an orphan's zombie may never be reaped
    in a container whose init does not wait)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def deadline_wait(condition: object, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


async def test_pause_and_resume_reach_the_child(fresh: tuple[Settings, Database]) -> None:
    settings, db = fresh
    app = make(settings, db)
    async with app.run_test(size=SIZE) as pilot:
        engine = app.engine
        assert engine is not None
        await wait_until(pilot, lambda: engine.state == "running", what="the worker")
        assert engine.pid is not None and engine.pid != os.getpid()
        assert engine.textual_in_child is False  # the child runs core only
        first = enqueue(db, "customer", "c_1001")
        await wait_until(pilot, lambda: status(db, first) == "success", what="a first job")
        await pilot.press("w")
        assert engine.state == "paused"
        await settle(pilot)
        assert app.header_info().worker == "paused"
        # The child's next heartbeat says paused: from then on it claims nothing.
        await wait_until(pilot, lambda: any(w.state == "paused"
                                            for w in heartbeats.list_workers(db)),
                         what="a paused heartbeat")
        held = enqueue(db, "customer", "c_1002x")
        since = clock.now()
        # A heartbeat after the enqueue: the claim loop (every 20 ms) had ~50 chances.
        await wait_until(pilot, lambda: any(w.last_seen_at > since
                                            for w in heartbeats.list_workers(db)),
                         what="a heartbeat after the enqueue")
        assert status(db, held) == "pending"
        await pilot.press("w")
        assert engine.state == "running"
        await wait_until(pilot, lambda: status(db, held) in ("success", "failed"),
                         what="the held job to run after resume")
        await wait_until(pilot, lambda: any(w.state == "running"
                                            for w in heartbeats.list_workers(db)),
                         what="a running heartbeat")


async def test_quit_leaves_no_live_lease_and_no_process(
        fresh: tuple[Settings, Database]) -> None:
    settings, db = fresh
    app = make(settings, db)
    async with app.run_test(size=SIZE) as pilot:
        engine = app.engine
        assert engine is not None
        job_id = enqueue(db, "slow", "s_1")
        await wait_until(pilot, lambda: status(db, job_id) == "running", what="a running job")
        pid = engine.pid
        assert pid is not None and alive(pid)
        await pilot.press("q")
        await wait_until(pilot, lambda: engine.done.is_set(), what="the worker to stop")
        # `q` closes the console by itself (leaving run_test's block would close it anyway).
        await async_wait_for(lambda: not app.is_running, message="q to close the console")
    assert engine.error is None
    assert not alive(pid)
    job = reads.get_job(db, job_id)
    assert job is not None
    assert job.status == "pending" and job.lease_owner is None  # released, not left running
    assert job.attempt_count == 0  # the interrupted attempt is not counted
    assert [a.outcome for a in reads.attempts_for(db, job_id)] == ["released"]
    assert [w.state for w in heartbeats.list_workers(db)] == ["stopped"]


async def test_console_cancel_stops_the_childs_handler(tmp_path: Path) -> None:
    # Leases of 60 s are renewed (and a cancel noticed by the lease check) every 5 s: the
    # handler stopping within 3 s is the console's cancel_local reaching the child.
    settings = settings_for(tmp_path, lease_seconds=60)
    db = Database(settings.database_url)
    upgrade(db)
    marker = tmp_path / "canceled"
    app = make(settings, db)
    try:
        async with app.run_test(size=SIZE) as pilot:
            job_id = enqueue(db, "slow", "s_cancel", {"marker": str(marker)})
            await wait_until(pilot, lambda: status(db, job_id) == "running",
                             what="a running job")
            await settle(pilot)  # the job list shows it, under the cursor
            await pilot.press("c")
            await pilot.press("y")
            t0 = time.monotonic()
            await wait_until(pilot, marker.exists, timeout=3.0,
                             what="the child's handler to be stopped")
            assert time.monotonic() - t0 < 3.0
            assert status(db, job_id) == "canceled"
            await pilot.press("q")
            await wait_until(pilot, lambda: app.engine is not None and app.engine.done.is_set(),
                             what="the worker to stop")
    finally:
        db.dispose()


async def test_log_lines_and_wake_ups_cross_the_process(tmp_path: Path) -> None:
    # A 5 s poll: a job the console enqueues starts at once only if its wake-up reaches
    # the child (SQLite has no cross-process notification). At debug level the child logs
    # `claim.empty` when a claim finds nothing, just before its claim loop goes to sleep.
    poll = 5.0
    settings = settings_for(tmp_path, poll_seconds=poll, log_level="debug")
    db = Database(settings.database_url)
    upgrade(db)
    app = make(settings, db)

    def lines(event: str) -> list[LogLine]:
        return [line for line in app.log_buffer.since(0) if line.event.get("event") == event]

    try:
        async with app.run_test(size=SIZE) as pilot:
            engine = app.engine
            assert engine is not None
            await wait_until(pilot, lambda: engine.state == "running", what="the worker")
            started = await async_wait_for(lambda: lines("worker.started"), timeout=30,
                                           message="the child's worker.started line")
            # An empty claim after the start: the child's claim loop is now asleep for 5 s.
            await async_wait_for(
                lambda: [x for x in lines("claim.empty") if x.seq > started[0].seq],
                timeout=30, message="an empty claim of the child")
            t0 = time.monotonic()
            job_id = await asyncio.to_thread(lambda: app.enqueue_one("customer", "c_1001")
                                             .job_id)
            await wait_until(pilot, lambda: status(db, job_id) == "success", timeout=2.0,
                             what="the console's job to run before the next poll")
            assert time.monotonic() - t0 < 2.0

            def finished_line() -> bool:
                return any(line.event.get("event") == "attempt.finished"
                           and line.event.get("job_id") == job_id
                           for line in app.log_buffer.since(0))

            await wait_until(pilot, finished_line, what="the job's log line from the child")
            await pilot.press("5")
            await settle(pilot)
            from syncbridge_tui.widgets.log_pane import LogPane

            await wait_until(pilot, lambda: app.screen.query_one(LogPane).lines_shown >= 2,
                             what="the log pane to show the child's lines")
    finally:
        db.dispose()


async def test_throughput_counts_the_jobs_the_child_finished(
        fresh: tuple[Settings, Database]) -> None:
    """The jobs/s the console shows is the child's count of finished jobs over its 5 s
    window: after N jobs finish it is above zero and at most N / 5."""
    settings, db = fresh
    app = make(settings, db)
    n = 6
    async with app.run_test(size=SIZE) as pilot:
        engine = app.engine
        assert engine is not None
        await wait_until(pilot, lambda: engine.state == "running", what="the worker")
        ids = [enqueue(db, "customer", f"c_{3001 + k}") for k in range(n)]
        await wait_until(pilot, lambda: all(status(db, j) in ("success", "failed")
                                            for j in ids), what="the jobs to finish")
        await wait_until(pilot, lambda: engine.processed == n and engine.throughput() > 0,
                         what="the child to report the finished jobs")
        rate = engine.throughput()
        assert 0 < rate <= n / THROUGHPUT_WINDOW_SECONDS + 1e-9, rate
        await pilot.press("q")
        await wait_until(pilot, lambda: engine.done.is_set(), what="the worker to stop")
    assert engine.throughput() == 0.0  # a stopped worker runs nothing


async def test_worker_start_error_is_a_toast_and_a_header_state(
        fresh: tuple[Settings, Database]) -> None:
    settings, db = fresh
    app = make(settings, db, bogus=1)  # core Worker refuses it, in the child
    async with app.run_test(size=SIZE) as pilot:
        engine = app.engine
        assert engine is not None
        await wait_until(pilot, lambda: engine.done.is_set(), what="the worker to give up")
        await wait_until(pilot, lambda: any("bogus" in str(n.message)
                                            for n in app._notifications),
                         what="a toast")
        info = app.header_info()
        assert info.worker == "stopped" and "bogus" in info.worker_note
        await pilot.press("q")
        await async_wait_for(lambda: not app.is_running, message="q to close the console")


_ORPHAN = """
import sys, threading, time
sys.path.insert(0, {root!r})
import core.enqueue
from core import heartbeats, reads
from core.config import load_settings
from core.db import Database
from syncbridge_tui.engine import EmbeddedWorker
from tests.tui.worker_jobs import slow_registry

if __name__ == "__main__":
    settings = load_settings(database_url={url!r}, demo=True, lease_seconds=60, poll_seconds=0.02,
                             shutdown_timeout_seconds=0.3)
    db = Database(settings.database_url)
    engine = EmbeddedWorker(db, settings, registry=slow_registry)
    threading.Thread(target=engine.run_blocking, daemon=True).start()
    while reads.get_job(db, {job_id}).status != "running":
        time.sleep(0.02)
    print(engine.pid, flush=True)
    time.sleep(600)
"""


def test_a_killed_console_takes_its_worker_down(fresh: tuple[Settings, Database],
                                                tmp_path: Path) -> None:
    """SIGKILL the process that supervises the worker (no goodbye, no cleanup): the child
    reads end of file on its command pipe, stops, releases its lease and exits."""
    settings, db = fresh
    job_id = enqueue(db, "slow", "s_orphan")
    script = tmp_path / "console_standin.py"
    script.write_text(textwrap.dedent(_ORPHAN.format(
        root=str(ROOT), url=settings.database_url, job_id=job_id)))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                              text=True, cwd=ROOT)
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())  # printed once the job runs in the child
        assert alive(child_pid) and status(db, job_id) == "running"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline_wait(lambda: not alive(child_pid), 10.0, "the orphaned worker to exit")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    job = reads.get_job(db, job_id)
    assert job is not None
    assert job.status == "pending" and job.lease_owner is None  # released, not left running
    assert [a.outcome for a in reads.attempts_for(db, job_id)] == ["released"]
    assert [w.state for w in heartbeats.list_workers(db)] == ["stopped"]


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
        await pilot.press("q")
        await wait_until(pilot, lambda: app.engine is not None and app.engine.done.is_set(),
                         what="the worker to stop")
