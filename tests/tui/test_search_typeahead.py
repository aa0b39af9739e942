"""Keys typed right after `/`, faster than the search box takes focus (tmux send-keys, a
paste, a fast typist), go into the search box in order: none of them reaches the job
table's bindings (c would open the cancel confirmation, 1 would switch panes).

`pilot.press` waits for the app to go idle after every key, which is human speed here;
these tests post the Key events back to back instead, as a terminal delivers one read.
"""

from __future__ import annotations

import pytest
from textual import events
from textual.widgets import Input

from core import reads
from syncbridge_tui.app import SyncBridgeApp
from syncbridge_tui.screens.main import MainScreen
from syncbridge_tui.screenshots import SIZE, settle, wait_until
from tests.tui.helpers import job_list

from .conftest import MakeApp

pytestmark = pytest.mark.anyio

KEYS = {"/": "slash", "_": "underscore", " ": "space"}


def type_at_once(app: SyncBridgeApp, text: str, *, then: tuple[str, ...] = ()) -> None:
    """Each character of `text` (then the named keys) as a Key event, with no pause."""
    for ch in text:
        app.post_message(events.Key(KEYS.get(ch, ch), ch))
    for key in then:
        app.post_message(events.Key(key, None))


def statuses(app: SyncBridgeApp) -> dict[int, str]:
    return {job.id: job.status for job in reads.list_jobs(app.db, reads.JobFilter(), limit=100)}


@pytest.mark.parametrize(("typed", "match"), [("c_fl", "c_flaky"), ("c_1", "c_1")])
async def test_keys_right_after_slash_go_into_the_search(showcase: MakeApp, typed: str,
                                                         match: str) -> None:
    app = showcase()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        before = statuses(app)
        jl = job_list(app)
        type_at_once(app, "/" + typed)
        search = jl.query_one("#search", Input)
        await wait_until(pilot, lambda: search.value == typed and jl.state.search == typed,
                         what=f"the search box to read {typed!r}")
        await settle(pilot)
        await wait_until(pilot, lambda: jl.jobs and all(match in job.entity_id
                                                        for job in jl.jobs),
                         what="the list to be filtered")
        assert isinstance(app.screen, MainScreen), app.screen  # no confirm modal
        assert app.screen.pane == "jobs"  # 1 did not switch panes
        assert app.focused is search
        assert statuses(app) == before  # nothing canceled


async def test_escape_and_enter_typed_ahead_keep_their_meaning(showcase: MakeApp) -> None:
    app = showcase()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        before = statuses(app)
        jl = job_list(app)
        search = jl.query_one("#search", Input)
        # enter keeps the search and goes back to the table
        type_at_once(app, "/c_fl", then=("enter",))
        await wait_until(pilot, lambda: app.focused is jl.table and jl.state.search == "c_fl",
                         what="enter to keep the search")
        await settle(pilot)
        await wait_until(pilot, lambda: [job.id for job in jl.jobs] == [3])
        assert search.display
        # esc clears it
        type_at_once(app, "/c", then=("escape",))
        await wait_until(pilot, lambda: app.focused is jl.table and not search.display,
                         what="esc to clear the search")
        await settle(pilot)
        await wait_until(pilot, lambda: len(jl.jobs) == 12)
        assert search.value == "" and jl.state.search == ""
        assert isinstance(app.screen, MainScreen)
        assert statuses(app) == before


async def test_keys_at_human_speed_still_work(showcase: MakeApp) -> None:
    app = showcase()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        jl = job_list(app)
        await pilot.press("slash", "c", "underscore", "f", "l")
        await settle(pilot)
        await wait_until(pilot, lambda: [job.id for job in jl.jobs] == [3])
        await pilot.press("enter", "c")  # the table again: c is cancel (job 3 succeeded)
        await wait_until(pilot, lambda: any("job 3 is success" in n.message
                                            for n in app._notifications),
                         what="cancel's refusal")


async def test_a_paste_right_after_slash_and_a_remapped_search_key(showcase: MakeApp) -> None:
    app = showcase()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        jl = job_list(app)
        search = jl.query_one("#search", Input)
        type_at_once(app, "/")
        app.post_message(events.Paste("c_fl"))
        await wait_until(pilot, lambda: search.value == "c_fl", what="the paste")
        await pilot.press("escape")
        app.set_keymap({"search": "ctrl+f"})  # what a keymap file does
        type_at_once(app, "", then=("ctrl+f",))
        type_at_once(app, "c_1")
        await wait_until(pilot, lambda: search.value == "c_1", what="typed after ctrl+f")
        assert isinstance(app.screen, MainScreen)
