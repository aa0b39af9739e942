"""WindowTable's shortcuts around DataTable's rendering, and G over more jobs than the
count goes to."""

from __future__ import annotations

import pytest
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import App, ComposeResult
from textual.widgets import DataTable

from core import enqueue
from core.demo import registry
from syncbridge_tui.cells import cell, status_cell
from syncbridge_tui.screenshots import SIZE, settle
from syncbridge_tui.widgets import job_list as job_list_module
from syncbridge_tui.widgets.window_table import WindowTable

from .conftest import MakeApp

pytestmark = pytest.mark.anyio

CELLS = [cell(""), cell("x"), cell("exactly9!"), cell("a bit longer than nine"),
         cell("日本語のテキスト", "bold"), cell("-", "dim"), status_cell("dead"),
         cell(12345, "cyan"), cell("red on a\tline", "red"), Text("spans", style="bold"),
         Text.assemble(("two", "red"), ("styles", "green"))]


class OneTable(App[None]):
    def compose(self) -> ComposeResult:
        table = WindowTable(id="t", windowed=False)
        table.add_column("A", width=9, key="a")
        table.add_column("B", width=1, key="b")
        for i, value in enumerate(CELLS):
            table.add_row(value, value, key=str(i))
        yield table


def chars(lines: list[list[Segment]]) -> list[tuple[str, Style | None]]:
    return [(ch, seg.style) for line in lines for seg in line for ch in seg.text]


async def test_fast_cells_render_as_datatable_does() -> None:
    app = OneTable()
    async with app.run_test(size=(40, 20)) as pilot:
        await pilot.pause()
        table = app.query_one(WindowTable)
        base = table.rich_style
        for row in range(len(CELLS)):
            for column, width in ((0, 11), (1, 3)):
                for cursor, hover in ((False, False), (True, False), (False, True)):
                    args = (row, column, base, width, cursor, hover)
                    fast = table._render_cell(*args)
                    table._cell_render_cache.clear()
                    slow = DataTable._render_cell(table, *args)
                    table._cell_render_cache.clear()
                    assert chars(fast) == chars(slow), (CELLS[row], column, cursor, hover)


async def test_update_cells_repaints_only_what_changed() -> None:
    app = OneTable()
    async with app.run_test(size=(40, 20)) as pilot:
        await pilot.pause()
        table = app.query_one(WindowTable)
        count = table._update_count
        assert table.update_cells([("1", "a", cell("x")), ("2", "a", cell("new"))]) == 1
        assert table._update_count == count  # nothing else re-rendered
        assert table.get_cell("2", "a") == cell("new")
        await pilot.pause()
        assert "new" in str(table.render_line(3).text)


async def test_g_past_the_count_cap_walks_from_the_end(
        showcase: MakeApp, monkeypatch: pytest.MonkeyPatch) -> None:
    """More jobs than the count goes to: G shows the oldest without knowing their offset,
    k and j move from there, g goes back to the newest."""
    monkeypatch.setattr(job_list_module, "COUNT_CAP", 20)
    app = showcase()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        enqueue.enqueue_many(app.db, "invoice", [f"i_many{i}" for i in range(300)],
                           known_types=registry.names(), max_attempts=4)
        jl = app.screen.query_one(job_list_module.JobsPane)
        await pilot.press("g")
        await settle(pilot)
        page = jl.page_size()
        await pilot.press("G")
        await settle(pilot)
        assert jl.state.from_end and not jl.position_known
        assert jl.selected_id == 1 and jl.table.cursor_row == page - 1
        title = str(jl.query_one("#list-title").render())
        assert f"the last {page} of 20+" in title and "oldest" in title
        await pilot.press("j")  # nothing below the end
        await settle(pilot)
        assert jl.state.end_offset == 0 and jl.selected_id == 1
        for _ in range(page):
            await pilot.press("k")
        await settle(pilot)
        assert jl.state.end_offset == 1 and jl.table.cursor_row == 0
        assert [job.id for job in jl.jobs] == list(range(page + 1, 1, -1))
        assert f"{page + 1}-2 from the end of 20+" in str(jl.query_one("#list-title").render())
        await pilot.press("g")
        await settle(pilot)
        assert not jl.state.from_end and jl.state.offset == 0 and jl.selected_id == 312
