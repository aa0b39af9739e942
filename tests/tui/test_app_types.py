"""The console lists the app's job types (--app): the type filter and the enqueue form."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Select

from core import reads
from core.config import load_settings
from core.db import Database
from core.migrations import upgrade
from syncbridge_tui.app import ConsoleOptions, create_app
from syncbridge_tui.screens.enqueue import EnqueueScreen
from syncbridge_tui.screenshots import SIZE, settle, wait_until
from tests.apps.sbtestapp import registry as app_registry
from tests.tui.helpers import job_list

pytestmark = pytest.mark.anyio


async def test_type_filter_and_enqueue_form_list_the_apps_types(tmp_path: Path) -> None:
    settings = load_settings(database_url=f"sqlite:///{tmp_path}/app.db",
                             app="tests.apps.sbtestapp:registry")
    db = Database(settings.database_url)
    upgrade(db)
    app = create_app(settings, ConsoleOptions(
        embedded_worker=False, live=False, blink=False, keymap={}, configure_logging=False),
        db=db)
    try:
        assert app.job_types() == app_registry.names()  # loaded from settings.app
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            seen = []
            for _ in range(len(app_registry.names()) + 1):
                await pilot.press("t")
                await settle(pilot)
                seen.append(job_list(app).state.job_type)
            assert seen == [*app_registry.names(), None]  # each type, then all again

            await pilot.press("e")
            await wait_until(pilot, lambda: isinstance(app.screen, EnqueueScreen))
            form = app.screen
            assert isinstance(form, EnqueueScreen)
            options = [str(label) for label, _ in form.query_one(Select)._options]
            assert [o for o in options if o in app_registry.names()] == app_registry.names()
            assert "customer" not in options
            form.query_one("#entity-id").value = "H-1"  # type: ignore[attr-defined]
            form.query_one(Select).value = "hang"
            await pilot.press("enter")
            await wait_until(pilot, lambda: reads.count_jobs(db) == 1, what="the enqueue")
        [job] = reads.list_jobs(db)
        assert (job.job_type, job.max_attempts) == ("hang", 2)  # the type's budget
    finally:
        db.dispose()
