"""Small lookups the console tests share."""

from __future__ import annotations

from textual.pilot import Pilot

from syncbridge_tui.app import SyncBridgeApp
from syncbridge_tui.screenshots import settle
from syncbridge_tui.widgets.job_list import JobList


def job_list(app: SyncBridgeApp) -> JobList:
    main = app.main_screen()
    assert main is not None
    jl = main.job_list()
    assert jl is not None
    return jl


async def press(pilot: Pilot[int], *keys: str) -> None:
    """Press keys, then wait until the console has applied what they asked for."""
    await pilot.press(*keys)
    await settle(pilot)
