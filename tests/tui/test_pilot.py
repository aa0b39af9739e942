"""The console driven by real key presses; the database is checked afterwards."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from textual.command import CommandList, CommandPalette
from textual.widgets import Input

from core import enqueue, reads
from core.demo import registry
from syncbridge_tui.app import SyncBridgeApp
from syncbridge_tui.screens.confirm import ConfirmScreen
from syncbridge_tui.screens.detail import DetailScreen
from syncbridge_tui.screens.enqueue import EnqueueScreen
from syncbridge_tui.screens.export import ExportScreen
from syncbridge_tui.screens.help import HelpScreen
from syncbridge_tui.screens.main import MainScreen
from syncbridge_tui.screenshots import SIZE, settle, wait_until
from syncbridge_tui.showcase import EVIL_ENTITY, EVIL_MESSAGE
from syncbridge_tui.text import clean
from syncbridge_tui.widgets.log_pane import LogPane
from tests.tui.helpers import job_list, press

from .conftest import MakeApp

pytestmark = pytest.mark.anyio


def shown_ids(app: SyncBridgeApp) -> list[int]:
    return [job.id for job in job_list(app).jobs]


def messages(app: SyncBridgeApp) -> list[str]:
    return [n.message for n in app._notifications]


async def confirm(pilot, key: str) -> None:  # type: ignore[no-untyped-def]
    await pilot.press(key)
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen),
                     what="the confirm modal")
    await pilot.press("y")
    await wait_until(pilot, lambda: not isinstance(pilot.app.screen, ConfirmScreen),
                     what="the modal to close")


async def test_filter_by_status_and_type(showcase: MakeApp) -> None:
    app = showcase()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert shown_ids(app) == list(range(12, 0, -1))
        # all -> pending -> running -> success -> failed -> dead
        await press(pilot, "a", "a", "a", "a", "a")
        assert job_list(app).state.statuses == ("dead",)
        assert shown_ids(app) == [5, 4]
        await pilot.press("t")  # type: customer
        await settle(pilot)
        assert shown_ids(app) == [4]
        await pilot.press("t", "t", "a", "a")  # type: invoice, all; status: canceled, failed+dead
        await settle(pilot)
        assert job_list(app).state.statuses == ("failed", "dead")
        assert job_list(app).state.job_type is None
        assert shown_ids(app) == [7, 6, 5, 4]
        await pilot.press("escape")  # clears the filters
        await settle(pilot)
        assert len(shown_ids(app)) == 12


async def test_search_and_clear(showcase: MakeApp) -> None:
    app = showcase()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "slash", *"c_fl")
        assert shown_ids(app) == [3]
        await pilot.press("enter")  # keeps the search, back to the table
        assert app.focused is job_list(app).table
        await press(pilot, "escape")
        assert len(shown_ids(app)) == 12
        # By job id and by correlation id prefix.
        await press(pilot, "slash", *"7")
        assert shown_ids(app) == [7]
        await pilot.press("escape")
        await press(pilot, "slash", *"0005c0ffee")
        assert shown_ids(app) == [5]


async def test_replay_a_dead_job_from_its_detail_with_two_keys(showcase: MakeApp) -> None:
    app = showcase()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "2")
        assert shown_ids(app) == [5, 4]
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, DetailScreen))
        await settle(pilot)
        detail = app.screen
        assert isinstance(detail, DetailScreen) and detail.job_id == 5
        assert [a.outcome for a in detail.data.attempts] == ["retry", "retry", "retry", "dead"]
        await confirm(pilot, "p")
        new = await_replay(app, 5)
        await wait_until(pilot, lambda: f"job 5 replayed as job {new} (n opens it)"
                         in messages(app), what="the replay toast")
        job = reads.get_job(app.db, new)
        assert job is not None and job.status == "pending" and job.replay_of_job_id == 5
        original = reads.get_job(app.db, 5)
        assert original is not None and original.status == "dead"  # history untouched
        await settle(pilot)
        await pilot.press("n")  # follow the link to the new job
        await wait_until(pilot, lambda: getattr(app.screen, "job_id", None) == new)
        await pilot.press("o")  # and back to the one it replays
        await wait_until(pilot, lambda: getattr(app.screen, "job_id", None) == 5)


def await_replay(app: SyncBridgeApp, job_id: int) -> int:
    replays = reads.replays_of(app.db, job_id)
    assert len(replays) == 1, replays
    return replays[0]


async def test_retry_through_the_modal(showcase: MakeApp) -> None:
    app = showcase()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "2")
        await confirm(pilot, "r")  # cursor on job 5
        await wait_until(pilot, lambda: "job 5 retried: pending again with a fresh budget"
                         in messages(app))
        job = reads.get_job(app.db, 5)
        assert job is not None and job.status == "pending" and job.attempt_count == 0
        assert len(reads.attempts_for(app.db, 5)) == 4  # history kept


async def test_cancel_through_the_modal_and_refusal_without_one(showcase: MakeApp) -> None:
    app = showcase()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert job_list(app).selected_id == 12  # newest first: pending i_2050
        await confirm(pilot, "c")
        await wait_until(pilot, lambda: "job 12 canceled" in messages(app))
        job = reads.get_job(app.db, 12)
        assert job is not None and job.status == "canceled"
        # A finished job cannot be canceled: the console says why, no modal, no change.
        await press(pilot, "G")
        assert job_list(app).selected_id == 1
        await pilot.press("c")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert ("job 1 is success; only pending or running jobs can be canceled"
                in messages(app))
        job = reads.get_job(app.db, 1)
        assert job is not None and job.status == "success"


async def test_bulk_replay_reports_new_jobs_and_refusals(showcase: MakeApp) -> None:
    app = showcase()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "2")
        await pilot.press("asterisk")  # everything matching the filter
        await wait_until(pilot, lambda: set(job_list(app).state.marked) == {4, 5},
                         what="both dead letters marked")
        await pilot.press("escape")  # clears marks
        assert job_list(app).state.marked == {}
        await pilot.press("space", "space")
        assert set(job_list(app).state.marked) == {4, 5}
        await pilot.press("p")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert app.screen.title_text == "Replay 2 jobs?"  # type: ignore[attr-defined]
        await pilot.press("y")
        # Job 4 (c_1002) already has an active replay (job 10): refused, and why.
        await wait_until(pilot, lambda: any(m.startswith("1 replayed as new jobs 13; 1 refused: ")
                                            for m in messages(app)), what="the bulk toast")
        assert any("already exists: job 10" in m for m in messages(app))
        assert reads.replays_of(app.db, 5) == [13]
        assert reads.replays_of(app.db, 4) == [10]
        assert job_list(app).state.marked == {4: "dead"}  # the refused one stays marked


async def test_read_only_refuses_every_mutation(showcase: MakeApp) -> None:
    app = showcase(read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.engine is None
        await pilot.press("2", "r", "p", "e", "w")
        await pilot.pause()
        assert not isinstance(app.screen, (ConfirmScreen, EnqueueScreen))
        notes = messages(app)
        for what in ("retry", "replay", "enqueue", "pausing the worker"):
            assert f"{what} is disabled: this console is read-only (--read-only)" in notes
        assert reads.replays_of(app.db, 5) == []
        assert reads.get_job(app.db, 5).status == "dead"  # type: ignore[union-attr]


async def test_enqueue_form_validates_and_shows_duplicates(showcase: MakeApp) -> None:
    app = showcase()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("e")
        await wait_until(pilot, lambda: isinstance(app.screen, EnqueueScreen))
        form = app.screen
        assert isinstance(form, EnqueueScreen)
        await pilot.press("space", "x")  # leading white space: refused inline
        await pilot.press("enter")
        assert "white space" in str(form.query_one("#enqueue-message").render())
        assert reads.count_jobs(app.db) == 12
        form.query_one("#entity-id", Input).value = "c_2040"  # active: job 11
        await pilot.press("enter")
        await wait_until(pilot, lambda: form.existing_id == 11, what="the duplicate")
        await pilot.press("enter")  # the focused "Open job 11"
        await wait_until(pilot, lambda: getattr(app.screen, "job_id", None) == 11)
        await pilot.press("escape", "e")
        await wait_until(pilot, lambda: isinstance(app.screen, EnqueueScreen))
        await pilot.press(*"c_9999", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, MainScreen))
        made = reads.list_jobs(app.db, reads.JobFilter(search="c_9999"))
        assert [j.status for j in made] == ["pending"]
        assert any(f"as job {made[0].id}" in m for m in messages(app))


async def test_untrusted_text_is_literal(showcase: MakeApp) -> None:
    app = showcase(untrusted=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "2")
        table = job_list(app).table
        row = table.get_row_at(0)
        assert row[3].plain == EVIL_ENTITY  # markup kept as text
        assert row[3].spans == []  # and it styled nothing
        assert row[5].plain.startswith(clean(EVIL_MESSAGE)[:30])
        assert "\x1b" not in row[5].plain and "\x07" not in row[5].plain


async def test_cursor_follows_its_job_and_window_is_in_place(showcase: MakeApp) -> None:
    app = showcase()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        jl = job_list(app)
        # A short list grows; the cursor follows its job down.
        await pilot.press("j")
        assert jl.selected_id == 11
        enqueue.enqueue(app.db, "customer", "c_top", known_types=registry.names(),
                      max_attempts=4)
        await settle(pilot)
        assert jl.selected_id == 11 and jl.table.cursor_row == 2 and jl.state.offset == 0
        # 300 more jobs: the table holds one screenful, no more.
        enqueue.enqueue_many(app.db, "invoice", [f"i_bulk{i}" for i in range(300)],
                           known_types=registry.names(), max_attempts=4)
        await press(pilot, "g")
        page = jl.page_size()
        assert jl.table.row_count == page < 100 and jl.total == 313
        # Reading further down a full screen: the rows stay put, newcomers pile up above.
        await pilot.press("j", "j", "j")
        reading = jl.selected_id
        assert reading == 310
        enqueue.enqueue_many(app.db, "customer", [f"c_new{i}" for i in range(3)],
                           known_types=registry.names(), max_attempts=4)
        await settle(pilot)
        assert jl.selected_id == reading and jl.table.cursor_row == 3
        assert jl.state.offset == 3 and shown_ids(app)[0] == 313
        assert "↑ 3 newer (g)" in str(jl.query_one("#list-title").render())
        await press(pilot, "G")
        assert jl.state.offset == 316 - page and jl.selected_id == 1
        assert jl.table.cursor_row == page - 1
        await press(pilot, "g")
        assert jl.state.offset == 0 and jl.table.cursor_row == 0 and jl.selected_id == 316
        await pilot.press("k")  # nothing above the top
        await settle(pilot)
        assert jl.state.offset == 0


async def test_export_view_to_json(showcase: MakeApp, tmp_path: Path) -> None:
    app = showcase()
    target = tmp_path / "dead.json"
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "2")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, ExportScreen))
        app.screen.query_one(Input).value = str(target)
        await pilot.press("enter")
        await wait_until(pilot, lambda: f"exported 2 jobs to {target}" in messages(app))
    data = json.loads(target.read_text())
    assert [row["id"] for row in data] == [5, 4]
    assert {row["status"] for row in data} == {"dead"}


async def test_help_lists_remapped_keys(showcase: MakeApp) -> None:
    app = showcase()
    app.keymap_overrides = {"retry": "R"}
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("2", "r")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)  # r no longer retries
        await pilot.press("R")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n", "question_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, HelpScreen))
    assert reads.get_job(app.db, 5).status == "dead"  # type: ignore[union-attr]


async def test_log_pane_filters_by_the_jobs_correlation_id(showcase: MakeApp) -> None:
    app = showcase()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        job = reads.get_job(app.db, 4)
        assert job is not None
        for i, cid in enumerate([job.correlation_id, "someone-else", job.correlation_id]):
            app.log_buffer({"event": "attempt.finished", "level": "info", "job_id": i,
                            "correlation_id": cid, "timestamp": "2026-01-15T09:00:00Z"})
        await pilot.press("2", "j", "l")  # job 4 is the second dead letter
        log = app.screen.query_one(LogPane)
        await wait_until(pilot, lambda: log.lines_shown == 2, what="two lines of job 4")
        assert log.correlation_id == job.correlation_id
        await pilot.press("escape")
        await wait_until(pilot, lambda: log.lines_shown == 3, what="every line")


async def test_palette_runs_an_action(showcase: MakeApp) -> None:
    app = showcase()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "2")
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette),
                         what="the command palette to be the active screen")
        await pilot.press(*"Replay (p)")
        commands = app.screen.query_one(CommandList)

        def replay_hit() -> bool:
            prompts = [str(commands.get_option_at_index(i).prompt)
                       for i in range(commands.option_count)]
            return bool(prompts) and "Replay" in prompts[0]

        await wait_until(pilot, replay_hit, what="the palette to list the Replay command")
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen),
                         what="the palette to open the replay confirmation")
        assert app.screen.title_text == "Replay job 5?"  # type: ignore[attr-defined]


async def test_polls_never_overlap_and_coalesce(showcase: MakeApp) -> None:
    """A slow database: requests made while a poll runs fold into one more poll."""
    app = showcase()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        jl = job_list(app)
        gate = threading.Event()
        running, peak, calls = 0, 0, 0
        lock = threading.Lock()
        original = jl.plan

        def plan():  # type: ignore[no-untyped-def]
            fetch = original()

            def slow():  # type: ignore[no-untyped-def]
                nonlocal running, peak, calls
                with lock:
                    running += 1
                    calls += 1
                    peak = max(peak, running)
                gate.wait(5)
                try:
                    return fetch()
                finally:
                    with lock:
                        running -= 1

            return slow

        jl.plan = plan  # type: ignore[method-assign]
        before = app.poll_count
        for _ in range(5):
            app.request_poll()
        await wait_until(pilot, lambda: calls == 1, what="the first slow poll")
        await pilot.press("j")
        assert jl.table.cursor_row == 1
        # The key was handled while the poll was still held in the database: the UI loop
        # does not wait for the database.
        assert running == 1 and not gate.is_set()
        gate.set()
        await wait_until(pilot, lambda: app.poll_count == before + 2 and not app._polling,
                         what="the coalesced poll")
        assert calls == 2 and peak == 1


async def test_demo_is_seeded_once_the_console_is_up(showcase: MakeApp,
                                                     tmp_path: Path) -> None:
    from core.config import load_settings
    from core.db import Database
    from core.migrations import upgrade
    from syncbridge_tui.app import ConsoleOptions, create_app
    from syncbridge_tui.demo import seed_demo

    settings = load_settings(database_url=f"sqlite:///{tmp_path}/empty.db")
    db = Database(settings.database_url)
    upgrade(db)
    app = create_app(settings, ConsoleOptions(
        embedded_worker=False, live=False, blink=False, keymap={}, configure_logging=False,
        seed=lambda: len(seed_demo(db, settings))), db=db)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await wait_until(pilot, lambda: any(m.startswith("seeded 8 demo jobs")
                                                for m in messages(app)), what="the seed")
            await settle(pilot)
            assert sorted(j.entity_id for j in job_list(app).jobs) == sorted(
                ["c_1001", "i_2001", "c_flaky", "i_flaky", "c_1002", "i_2002", "c_missing",
                 "c_invalid"])
    finally:
        db.dispose()


def test_run_app_seeds_only_an_empty_writable_database(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from core.config import load_settings
    from syncbridge_tui import app as app_module

    seen: list[app_module.ConsoleOptions] = []
    monkeypatch.setattr(app_module.SyncBridgeApp, "run",
                        lambda self, **_: seen.append(self.options))
    settings = load_settings(database_url=f"sqlite:///{tmp_path}/run.db", demo=True)

    def args(**kw: object) -> argparse.Namespace:
        base = dict(db=None, no_worker=True, read_only=False, no_demo=False, concurrency=None)
        return argparse.Namespace(**{**base, **kw})

    assert app_module.run_app(args(no_demo=True), settings) == 0
    assert seen[-1].seed is None
    assert app_module.run_app(args(read_only=True), settings) == 0
    assert seen[-1].seed is None and seen[-1].read_only
    assert app_module.run_app(args(), settings) == 0
    assert seen[-1].seed is not None and not seen[-1].embedded_worker
    assert "mock" in seen[-1].worker_kwargs  # the paced demo upstream, first run only
