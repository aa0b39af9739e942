"""Every screen, byte for byte: seeded database, fixed clock, 140x40, no worker, no timers.

Update after an intended change with `pytest tests/tui --snapshot-update` and review the
SVG diffs (the same scenes make the README's screenshots)."""

from __future__ import annotations

from typing import Any

import pytest
from textual.pilot import Pilot

from syncbridge_tui.screens.confirm import ConfirmScreen
from syncbridge_tui.screens.export import ExportScreen
from syncbridge_tui.screens.pause import PauseScreen
from syncbridge_tui.screenshots import SCENES, SIZE, settle, wait_until
from syncbridge_tui.showcase import EVIL_ENTITY

from .conftest import MakeApp


@pytest.mark.parametrize("scene", list(SCENES))
def test_scene(scene: str, showcase: MakeApp, snap_compare: Any) -> None:
    """Each pane, the detail view, the confirm modal, the enqueue form (duplicate), help."""
    assert snap_compare(showcase(), terminal_size=SIZE, run_before=SCENES[scene])


def test_read_only(showcase: MakeApp, snap_compare: Any) -> None:
    """READ-ONLY in the header, worker off, and `r` says why it does nothing."""

    async def run(pilot: Pilot[int]) -> None:
        await settle(pilot)
        await pilot.press("2", "r")
        await settle(pilot)

    assert snap_compare(showcase(read_only=True), terminal_size=SIZE, run_before=run)


def test_untrusted_dead_letters(showcase: MakeApp, snap_compare: Any) -> None:
    """An entity id and upstream messages full of markup and ANSI escapes, shown literally."""

    async def run(pilot: Pilot[int]) -> None:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)

    assert snap_compare(showcase(untrusted=True), terminal_size=SIZE, run_before=run)


def test_untrusted_detail(showcase: MakeApp, snap_compare: Any) -> None:
    async def run(pilot: Pilot[int]) -> None:
        await settle(pilot)
        pilot.app.open_detail(8)  # type: ignore[attr-defined]
        await settle(pilot)
        screen = pilot.app.screen
        assert screen.data.job.entity_id == EVIL_ENTITY  # type: ignore[attr-defined]

    assert snap_compare(showcase(untrusted=True), terminal_size=SIZE, run_before=run)


def test_bulk_confirm(showcase: MakeApp, snap_compare: Any) -> None:
    """Marking both dead letters and pressing p: the modal says how many."""

    async def run(pilot: Pilot[int]) -> None:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        await pilot.press("space", "space", "p")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen),
                         what="the confirm modal")

    assert snap_compare(showcase(), terminal_size=SIZE, run_before=run)


def test_export_modal(showcase: MakeApp, snap_compare: Any) -> None:
    async def run(pilot: Pilot[int]) -> None:
        await settle(pilot)
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ExportScreen),
                         what="the export modal")

    assert snap_compare(showcase(), terminal_size=SIZE, run_before=run)


@pytest.mark.parametrize("width", [80, 120])
def test_jobs_narrow(width: int, showcase: MakeApp, snap_compare: Any) -> None:
    """Narrower terminals drop the least-read columns; LAST ERROR keeps 20+ characters (and
    says why a pending job is held: "held: billing open")."""
    assert snap_compare(showcase(), terminal_size=(width, 30), run_before=scene_jobs_narrow)


async def scene_jobs_narrow(pilot: Pilot[int]) -> None:
    await settle(pilot)
    labels = [str(c.label) for c in pilot.app.screen.query_one("#table").columns.values()]
    assert labels[-1] == "LAST ERROR"
    width = list(pilot.app.screen.query_one("#table").columns.values())[-1].width
    assert width >= 20, width


def test_pause_prompt(showcase: MakeApp, snap_compare: Any) -> None:
    """p on the upstreams pane: for how long (typed, or one of four choices), esc keeps."""

    async def run(pilot: Pilot[int]) -> None:
        await settle(pilot)
        await pilot.press("6")
        await settle(pilot)
        await pilot.press("j", "p")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, PauseScreen),
                         what="the pause prompt")

    assert snap_compare(showcase(), terminal_size=SIZE, run_before=run)
