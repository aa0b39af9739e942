"""The upstreams pane (6), driven by real key presses over the seeded showcase: what it
shows through an outage (closed -> open -> half-open -> closed, written by core's own
Protection as a worker would), and the operator's pause / resume / close / open: confirmed,
audited with the OS user, refused read-only, a state that changed meanwhile explained."""

from __future__ import annotations

from typing import Any

import pytest
from textual.command import CommandList, CommandPalette
from textual.widgets import Input

from core import clock, operator_actions
from core import upstream_protection as up
from syncbridge_tui.app import SyncBridgeApp
from syncbridge_tui.screens.confirm import ConfirmScreen
from syncbridge_tui.screens.pause import PauseScreen
from syncbridge_tui.screenshots import SIZE, settle, wait_until
from syncbridge_tui.widgets.upstreams_pane import COLUMNS, UpstreamsPane
from tests.tui.helpers import job_list, press

from .conftest import MakeApp

pytestmark = pytest.mark.anyio

LABELS = [label for label, _ in COLUMNS]


def pane(app: SyncBridgeApp) -> UpstreamsPane:
    return app.screen.query_one(UpstreamsPane)


def shown(app: SyncBridgeApp, name: str) -> dict[str, str]:
    """The pane's row for `name`, by column label."""
    table = app.screen.query_one("#upstreams-table")
    row = table.get_row(name)  # type: ignore[attr-defined]
    return dict(zip(LABELS, [c.plain for c in row], strict=True))


def messages(app: SyncBridgeApp) -> list[str]:
    return [n.message for n in app._notifications]


def upstream_audit(app: SyncBridgeApp) -> list[tuple[str, str, str]]:
    """(action, upstream, actor) of the upstream controls, oldest first."""
    rows = operator_actions.audit_log(app.db, limit=1000)
    return [(str(r["action"]), str(r["upstream"]), str(r["actor"]))
            for r in reversed(rows) if r.get("upstream")]


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


async def refresh(pilot: Any, app: SyncBridgeApp) -> None:
    pane(app).refresh_now()
    await settle(pilot)


async def test_the_pane_follows_an_outage(showcase: MakeApp) -> None:
    """crm closed -> open (5 failures) -> half-open (one worker's probe) -> closed (its
    success), each seen on the next refresh; written by core's Protection, as a worker."""
    app = showcase()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "6")
        assert app.main_screen().pane == "upstreams"  # type: ignore[union-attr]
        # The seeded states: billing open, crm closed with its configured limit, ledger
        # paused by an operator (another app's upstream, recorded by its workers).
        assert [s.name for s in pane(app).rows] == ["billing", "crm", "ledger"]
        crm = shown(app, "crm")
        assert (crm["STATE"], crm["BREAKER"], crm["RATE"], crm["NOW"]) == (
            "closed", "closed", "20/s", "20/s")
        assert (crm["IN FLIGHT"], crm["WAITING"], crm["5xx"], crm["NEXT PROBE"]) == (
            "1/4", "3", "2", "-")
        billing = shown(app, "billing")
        assert (billing["STATE"], billing["FAILS"], billing["5xx"], billing["NEXT PROBE"]) == (
            "open", "5", "5", "in 4s")  # opened 0.8 s before the showcase's clock
        ledger = shown(app, "ledger")
        assert (ledger["STATE"], ledger["PAUSE ENDS"], ledger["WAITING"]) == (
            "paused", "in 14m59s", "0")

        clk = Clock(clock.now())
        clock.set_clock(clk)
        # A worker of an app whose customer jobs call crm alone (billing does not hold them).
        policy = up.Policy(cooldown_seconds=5.0)
        worker = up.Protection(app.db, policy, {"customer": ("crm",)}, "w-outage")
        worker.start()
        for _ in range(policy.breaker_failures):
            worker.record([up.Observation("crm", "failure", 11)])
        await refresh(pilot, app)
        crm = shown(app, "crm")
        assert (crm["STATE"], crm["BREAKER"], crm["FAILS"], crm["NEXT PROBE"]) == (
            "open", "open", "5", "in 5s")
        assert "1 open" not in str(app.screen.query_one("#upstreams-title").render())
        assert "2 open" in str(app.screen.query_one("#upstreams-title").render())

        clk.t += 6  # past the cool-down: one probe
        await refresh(pilot, app)
        assert shown(app, "crm")["NEXT PROBE"] == "now"
        probe = worker.claim("w-outage", 4, lease_seconds=30, job_types=["customer"])
        assert len(probe) == 1 and worker.probes == {probe[0].id: "crm"}
        await refresh(pilot, app)
        crm = shown(app, "crm")
        assert (crm["STATE"], crm["BREAKER"], crm["NEXT PROBE"]) == (
            "half-open", "half-open", "probing")
        await press(pilot, "j")  # the cursor's upstream, in words
        assert "one probe job is out (worker w-outage)" in str(
            app.screen.query_one("#upstream-detail").render())

        worker.record([up.Observation("crm", "ok", probe[0].id)])
        await refresh(pilot, app)
        crm = shown(app, "crm")
        assert (crm["STATE"], crm["BREAKER"], crm["FAILS"], crm["NEXT PROBE"]) == (
            "closed", "closed", "0", "-")


async def _pick(pilot: Any, app: SyncBridgeApp, name: str) -> None:
    """Move the pane's cursor to `name`."""
    table = app.screen.query_one("#upstreams-table")
    table.move_cursor(row=table.get_row_index(name))  # type: ignore[attr-defined]
    await pilot.pause()
    current = pane(app).current()
    assert current is not None and current.name == name


async def _confirm(pilot: Any, app: SyncBridgeApp, key: str) -> None:
    await pilot.press(key)
    await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the modal")
    await pilot.press("y")
    await wait_until(pilot, lambda: not isinstance(app.screen, ConfirmScreen),
                     what="the modal to close")


async def test_pause_resume_close_open_confirmed_and_audited(showcase: MakeApp) -> None:
    app = showcase(actor=None)  # as a real console: the OS user
    me = operator_actions.current_actor()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "6")
        seeded = upstream_audit(app)
        assert seeded == [("upstream.pause", "ledger", "operator")]

        # p: how long (a bad duration is an inline error), then enter.
        await _pick(pilot, app, "crm")
        await pilot.press("p")
        await wait_until(pilot, lambda: isinstance(app.screen, PauseScreen), what="the prompt")
        assert app.screen.title_text == "Pause upstream crm?"  # type: ignore[attr-defined]
        await pilot.press(*"soon", "enter")
        await pilot.pause()
        assert "expected a duration" in str(app.screen.query_one("#pause-error").render())
        app.screen.query_one("#pause-for", Input).value = "10m"
        await pilot.press("enter")
        await wait_until(pilot, lambda: any(m.startswith("crm paused for 10m00s")
                                            for m in messages(app)), what="the pause toast")
        await settle(pilot)
        assert (shown(app, "crm")["STATE"], shown(app, "crm")["PAUSE ENDS"]) == (
            "paused", "in 10m00s")
        assert upstream_audit(app)[-1] == ("upstream.pause", "crm", me)

        # Esc on the prompt changes nothing.
        await pilot.press("p")
        await wait_until(pilot, lambda: isinstance(app.screen, PauseScreen), what="the prompt")
        await pilot.press("escape")
        await pilot.pause()
        assert len(upstream_audit(app)) == 2

        # u: resume it.
        await _confirm(pilot, app, "u")
        await wait_until(pilot, lambda: "crm resumed: its jobs may be claimed again"
                         in messages(app), what="the resume toast")
        await settle(pilot)
        assert shown(app, "crm")["STATE"] == "closed"
        assert upstream_audit(app)[-1] == ("upstream.resume", "crm", me)
        # Resuming what is not paused: no modal, the reason.
        await pilot.press("u")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert ("crm is not paused (its breaker is closed); nothing to resume"
                in messages(app))

        # c: close billing's breaker (its jobs are no longer held in the jobs list).
        await _pick(pilot, app, "billing")
        await _confirm(pilot, app, "c")
        await wait_until(pilot, lambda: any(m.startswith("billing's breaker closed")
                                            for m in messages(app)), what="the close toast")
        await settle(pilot)
        assert (shown(app, "billing")["STATE"], shown(app, "billing")["FAILS"]) == (
            "closed", "0")
        assert upstream_audit(app)[-1] == ("upstream.reset", "billing", me)

        # o: open it by hand; again: already open, said so.
        await _confirm(pilot, app, "o")
        await wait_until(pilot, lambda: any(m.startswith("billing's breaker opened")
                                            for m in messages(app)), what="the open toast")
        await settle(pilot)
        assert (shown(app, "billing")["STATE"], shown(app, "billing")["NEXT PROBE"]) == (
            "open", "in 5s")
        assert upstream_audit(app)[-1] == ("upstream.open", "billing", me)
        await pilot.press("o")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert any(m.startswith("billing's breaker is open already") for m in messages(app))
        assert [a for a, _, _ in upstream_audit(app)] == [
            "upstream.pause", "upstream.pause", "upstream.resume", "upstream.reset",
            "upstream.open"]


async def test_a_state_that_changed_behind_the_modal_is_explained(showcase: MakeApp) -> None:
    app = showcase()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "6")
        await _pick(pilot, app, "ledger")
        await pilot.press("u")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the modal")
        # Another operator resumes it (the CLI) while this one reads the dialog.
        up.resume(app.db, "ledger", actor="someone-else", known=["ledger"])
        await pilot.press("y")
        await wait_until(pilot, lambda: any("changed meanwhile" in m for m in messages(app)),
                         what="the raced toast")
        assert ("it changed meanwhile: ledger is not paused (its breaker is closed); nothing "
                "to resume" in messages(app))
        assert [a for a, n, _ in upstream_audit(app) if n == "ledger"] == [
            "upstream.pause", "upstream.resume"]  # the seed's and the other operator's


async def test_read_only_refuses_every_upstream_control(showcase: MakeApp) -> None:
    app = showcase(read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "6")
        await pilot.press("p", "u", "c", "o")
        await pilot.pause()
        assert not isinstance(app.screen, (ConfirmScreen, PauseScreen))
        notes = messages(app)
        for what in ("pausing an upstream", "resuming an upstream",
                     "closing an upstream's breaker", "opening an upstream's breaker"):
            assert f"{what} is disabled: this console is read-only (--read-only)" in notes
        assert upstream_audit(app) == [("upstream.pause", "ledger", "operator")]


async def test_palette_runs_an_upstream_control_on_the_pane_only(showcase: MakeApp) -> None:
    app = showcase()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)

        async def palette(command: str) -> None:
            await pilot.press("ctrl+p")
            await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette),
                             what="the command palette")
            await pilot.press(*command)
            commands = app.screen.query_one(CommandList)

            def hit() -> bool:
                return commands.option_count > 0 and command in str(
                    commands.get_option_at_index(0).prompt)

            await wait_until(pilot, hit, what=f"the palette to list {command}")
            await pilot.press("enter")

        await palette("Open breaker (o)")  # on the jobs pane: where it works
        await wait_until(pilot, lambda: any("works in the upstreams pane (6)" in m
                                            for m in messages(app)), what="the hint")
        await press(pilot, "6")
        await _pick(pilot, app, "crm")
        await palette("Pause upstream (p)")
        await wait_until(pilot, lambda: isinstance(app.screen, PauseScreen),
                         what="the pause prompt from the palette")
        assert app.screen.title_text == "Pause upstream crm?"  # type: ignore[attr-defined]


async def test_jobs_list_says_why_a_pending_job_is_held(showcase: MakeApp) -> None:
    app = showcase()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        jl = job_list(app)
        held = {job.id: jl.extra.get(job.id) for job in jl.jobs if job.status == "pending"}
        assert held == {12: "held: billing open", 11: "held: billing open",
                        8: "held: billing open"}
        row = [c.plain for c in jl.table.get_row_at(0)]
        assert "held" in row and row[-1] == "held: billing open"
        # Billing's breaker closed by hand: nothing held at the next refresh.
        up.reset(app.db, "billing", actor="op", known=["billing"])
        await settle(pilot)
        assert jl.extra == {}
        assert [c.plain for c in jl.table.get_row_at(0)][-1] == "-"
