"""Arbitrary text typed into the console's enqueue form and search box (issue 4, point 7):
either a clean inline error, or a stored job whose entity id round-trips and can be found;
never a crash, never a partial row."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from textual.widgets import Input

from core import enqueue
from core.errors import InvalidInput
from core.models import jobs_t
from syncbridge_tui.screens.enqueue import EnqueueScreen
from syncbridge_tui.screens.main import MainScreen
from syncbridge_tui.screenshots import SIZE, build_showcase, settle, wait_until

pytestmark = pytest.mark.slow  # end to end: `make test` runs it, `make test-fast` skips it

# What a terminal can deliver: any Unicode scalar value (no lone surrogates), plus the
# markup and escape sequences an attacker would try.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=140)
NASTY = st.sampled_from(["[bold red]x[/]", "[link=http://example.invalid]y[/link]",
                         "\x1b[31mred\x1b[0m", "[/]", "[", "\\[b]", "%_", "c_10%", "ü ñ 漢字"])
ENTITY = st.one_of(TEXT, NASTY, st.builds(lambda a, b: a + b, NASTY, TEXT))


def _count(app: object, entity: str | None = None) -> int:
    q = select(func.count()).select_from(jobs_t)
    if entity is not None:
        q = q.where(jobs_t.c.entity_id == entity)
    with app.db.read() as conn:  # type: ignore[attr-defined]
        return int(conn.execute(q).scalar() or 0)


async def _scenario(values: list[str], directory: Path) -> None:
    app = build_showcase(directory)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            for value in values:
                before = _count(app)
                try:
                    enqueue.validate_entity_id(value)
                    valid = True
                except InvalidInput:
                    valid = False
                await pilot.press("e")
                await wait_until(pilot, lambda: isinstance(app.screen, EnqueueScreen))
                form = app.screen
                assert isinstance(form, EnqueueScreen)
                form.query_one("#entity-id", Input).value = value
                await pilot.pause()
                form._submit()
                if valid:
                    await wait_until(pilot, lambda f=form: isinstance(app.screen, MainScreen)
                                     or f.existing_id is not None, what="enqueue answer")
                    assert _count(app, value) >= 1  # the id round-trips exactly
                    if isinstance(app.screen, EnqueueScreen):
                        await pilot.press("escape")  # a duplicate: the form stayed open
                else:
                    await pilot.pause()
                    message = str(form.query_one("#enqueue-message").render())
                    assert message.strip(), f"no inline error for {value!r}"
                    assert _count(app) == before  # nothing half-written
                    await pilot.press("escape")
                await wait_until(pilot, lambda: isinstance(app.screen, MainScreen))
                # The same text in the search box: filtered (or nothing), never a crash.
                await pilot.press("slash")
                search = app.screen.query_one("#search", Input)
                search.value = value
                await settle(pilot)
                await pilot.press("escape")
                await settle(pilot)
    finally:
        app.db.dispose()


@settings(max_examples=3, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(values=st.lists(ENTITY, min_size=6, max_size=6))
def test_console_enqueue_and_search_take_any_text(values: list[str],
                                                  tmp_path_factory: pytest.TempPathFactory
                                                  ) -> None:
    cwd = os.getcwd()
    try:
        asyncio.run(asyncio.wait_for(_scenario(values, tmp_path_factory.mktemp("fuzz")), 120))
    finally:
        os.chdir(cwd)
