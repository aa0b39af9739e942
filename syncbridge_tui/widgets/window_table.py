"""A DataTable that shows one window of a much larger result and is updated in place.

The table never holds more rows than fit on screen. Moving past its first or last row
posts `WindowTable.Scroll` instead of scrolling, and the owner fetches the next window
from the database; `show_rows` then rewrites only the cells that changed. Removing rows
makes DataTable re-layout, so rows are only added or removed at the tail, and only when
the window's length changes (the last page, a filter with few matches).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.coordinate import Coordinate
from textual.message import Message
from textual.widgets import DataTable

from syncbridge_tui import keymap


class WindowTable(DataTable[Text]):
    BINDINGS = keymap.bindings(keymap.MOVE)

    @dataclass
    class Scroll(Message):
        """Move the window: by `delta` rows, or to the "top" / "bottom"."""

        table: WindowTable
        delta: int = 0
        to: str | None = None

    def __init__(self, *, id: str | None = None, classes: str | None = None,
                 windowed: bool = True) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=True,
                         show_cursor=True)
        self._shown: list[tuple[Text, ...]] = []
        # False: an ordinary table (attempts, metrics, workers) that still knows j/k/g/G.
        self.windowed = windowed

    # --- movement past the window's edges ------------------------------------------------------

    def _scroll(self, delta: int = 0, to: str | None = None) -> None:
        self.post_message(self.Scroll(self, delta, to))

    def action_cursor_down(self) -> None:
        if self.windowed and self.row_count and self.cursor_row >= self.row_count - 1:
            self._scroll(1)
        else:
            super().action_cursor_down()

    def action_cursor_up(self) -> None:
        if self.windowed and self.cursor_row <= 0:
            self._scroll(-1)
        else:
            super().action_cursor_up()

    def action_page_down(self) -> None:
        if self.windowed:
            self._scroll(max(1, self.row_count - 1))
        else:
            super().action_page_down()

    def action_page_up(self) -> None:
        if self.windowed:
            self._scroll(-max(1, self.row_count - 1))
        else:
            super().action_page_up()

    def action_scroll_top(self) -> None:
        if self.windowed:
            self._scroll(to="top")
        else:
            super().action_scroll_top()

    def action_scroll_bottom(self) -> None:
        if self.windowed:
            self._scroll(to="bottom")
        else:
            super().action_scroll_bottom()

    def _on_mouse_scroll_down(self, event: object) -> None:  # wheel = one row of window
        if self.windowed:
            self._scroll(1)

    def _on_mouse_scroll_up(self, event: object) -> None:
        if self.windowed:
            self._scroll(-1)

    # --- in-place updates ------------------------------------------------------------------------

    def set_cell(self, row: int, column: int, value: Text) -> None:
        if row < len(self._shown) and self._shown[row][column] != value:
            cells = list(self._shown[row])
            cells[column] = value
            self._shown[row] = tuple(cells)
            self.update_cell_at(Coordinate(row, column), value, update_width=False)

    def show_rows(self, rows: Sequence[tuple[Text, ...]]) -> None:
        """Make the table show exactly `rows`, touching only cells that changed."""
        shown = self._shown
        for i, row in enumerate(rows[: len(shown)]):
            old = shown[i]
            for c, (new_cell, old_cell) in enumerate(zip(row, old, strict=True)):
                if new_cell != old_cell:
                    self.update_cell_at(Coordinate(i, c), new_cell, update_width=False)
            shown[i] = row
        for i in range(len(shown), len(rows)):
            self.add_row(*rows[i], key=str(i))
            shown.append(rows[i])
        while len(shown) > len(rows):
            shown.pop()
            self.remove_row(str(len(shown)))
