"""The workers pane's recurring schedules (pilot): what each one says after the seed's
ticks, and that a new slot ticked while the console is open shows up at the next refresh."""

from __future__ import annotations

import pytest

from core import clock, schedules
from syncbridge_tui.screenshots import settle
from syncbridge_tui.showcase import SHOWCASE_SCHEDULES
from syncbridge_tui.widgets.workers_pane import WorkersPane

from .conftest import MakeApp

pytestmark = pytest.mark.anyio


async def test_schedules_section_shows_next_slot_and_last_job(showcase: MakeApp) -> None:
    app = showcase()
    async with app.run_test(size=(140, 40)) as pilot:
        await settle(pilot)
        await pilot.press("4")
        await settle(pilot)
        pane = app.screen.query_one(WorkersPane)
        assert app.screen.query_one("#schedules-table").display
        table = app.screen.query_one("#schedules-table")
        rows = {str(key.value): [c.plain for c in table.get_row(key)] for key in table.rows}
        assert rows["customers-hourly"][2:4] == ["every 1h", "in 59m42s"]
        assert rows["customers-hourly"][6:] == ["11", "pending"]
        assert rows["invoices-nightly"][6:] == ["-", "skipped: previous still active"]
        assert rows["weekly-report"][5:] == ["never", "-", "-"]
        # The next hourly slot comes; the previous job is still pending: skipped.
        now = clock.now() + 3600
        clock.set_clock(lambda: now)
        schedules.tick(app.db, SHOWCASE_SCHEDULES[:1], max_attempts=4)
        await settle(pilot)
        row = table.get_row("customers-hourly")
        assert [c.plain for c in row][5:] == ["18s ago", "-", "skipped: previous still active"]
        assert pane.schedule_rows[0].last_job_id is None
