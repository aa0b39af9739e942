"""A DataTable that shows one window of a much larger result and is updated in place.

The table never holds more rows than fit on screen. Moving past its first or last row
posts `WindowTable.Scroll` instead of scrolling, and the owner fetches the next window
from the database; `show_rows` then rewrites only the cells that changed. Removing rows
makes DataTable re-layout, so rows are only added or removed at the tail, and only when
the window's length changes (the last page, a filter with few matches).

DataTable keys every cached cell, row and line by one table-wide update counter, which
`update_cell` and a resize bump: one changed cell (an AGE ticking every poll) or a pane
shown again re-rendered every cell of the table (every row x every column of Rich
rendering, a visible stall). Here a changed cell evicts only its own cache entries and
repaints only its row, and a resize evicts nothing (the columns have fixed widths and the
line cache is keyed by the table's width). Focus moving in or out (every pane switch)
restyles the table, and DataTable then dropped every cached render too; its caches are
keyed by the focus state already, so they are kept unless a style really changed.

A cell that must be rendered is built directly as its segments when it is what the
console's cells are (`cells.cell`: one line of rich Text, one style, no spans, cropped
with an ellipsis): the same characters and styles as DataTable's own Rich pipeline
(Styled(Padding(Text)) through `Console.render_lines`), at a fraction of the cost; any
other cell goes through DataTable's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.coordinate import Coordinate
from textual.message import Message
from textual.widget import Widget
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowKey

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
        self._styled_state: object = None
        self._meta_styles: dict[tuple[int, int], Style] = {}
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

    def notify_style_update(self) -> None:
        # Called when the table is restyled: by focus or hover moving (every pane switch),
        # or by a real change (a theme, the CSS). Cached cells and lines are keyed by the
        # focus / hover state already; only a restyle in the same state drops them.
        state = self.get_pseudo_class_state()
        previous, self._styled_state = self._styled_state, state
        if previous is not None and previous != state:
            Widget.notify_style_update(self)
            self._styles_cache.clear()
            self._get_styles_to_render_cell.cache_clear()
            self.refresh()
            return
        super().notify_style_update()

    def _render_cell(self, row_index: int, column_index: int, base_style: Style, width: int,
                     cursor: bool = False, hover: bool = False) -> list[list[Segment]]:
        if row_index < max(0, self.fixed_rows) or column_index < max(0, self.fixed_columns):
            return super()._render_cell(row_index, column_index, base_style, width,
                                        cursor, hover)
        row_key = self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        if row_key is None or column_key is None:  # outside the table: Textual draws it
            return super()._render_cell(row_index, column_index, base_style, width,
                                        cursor, hover)
        cache_key = (row_key, column_key, base_style, cursor, hover, self._show_hover_cursor,
                     self._update_count, self._pseudo_class_state)
        cached = self._cell_render_cache.get(cache_key)
        if cached is not None:
            return cached
        value = self._data[row_key].get(column_key)
        row = self.rows.get(row_key)
        if (row is None or row.height != 1 or type(value) is not Text or value.spans
                or value.overflow != "ellipsis" or value.justify not in (None, "default", "left")
                or "\n" in value.plain or value.end != "\n"):
            return super()._render_cell(row_index, column_index, base_style, width,
                                        cursor, hover)
        component_style, post_style = self._get_styles_to_render_cell(
            False, False, False, hover, cursor, self.show_cursor, self._show_hover_cursor,
            self.cursor_foreground_priority == "css", self.cursor_background_priority == "css")
        # Styles first (shared by every cell of a row or column: Rich caches the sums),
        # then the cell's own meta (its row and column, for clicks) added once.
        meta = self._meta_styles.get((row_index, column_index))
        if meta is None:
            meta = self._meta_styles[row_index, column_index] = Style.from_meta(
                {"row": row_index, "column": column_index})
        pre = base_style + component_style
        text_style = self.app.console.get_style(value.style, default=Style.null())
        blank = pre + post_style + meta
        pad = self.cell_padding
        inner = max(0, width - 2 * pad)
        plain = value.plain
        length = cell_len(plain)
        if length > inner:
            plain = set_cell_size(plain, inner - 1) + "…" if inner > 1 else "…"[:inner]
            length = cell_len(plain)
        segments = []
        if pad:
            segments.append(Segment(" " * pad, blank))
        if plain:
            segments.append(Segment(plain, pre + text_style + post_style + meta))
        if inner - length + pad > 0:
            segments.append(Segment(" " * (inner - length + pad), blank))
        lines = [segments]
        self._cell_render_cache[cache_key] = lines
        return lines

    def _on_resize(self, event: events.Resize) -> None:
        # DataTable's handler bumps the table-wide counter: every cell re-rendered when a
        # pane is shown again. Nothing here depends on the size (see the module).
        event.prevent_default()

    def update_cells(self, changes: Iterable[tuple[RowKey | str, ColumnKey | str, Text]]) -> int:
        """Set cells by (row key, column key); only the ones whose value differs are
        written, only their cached renders evicted, only their rows repainted. Returns how
        many changed."""
        cells: set[tuple[RowKey, ColumnKey]] = set()
        for row_key, column_key, value in changes:
            rk = row_key if isinstance(row_key, RowKey) else RowKey(row_key)
            ck = column_key if isinstance(column_key, ColumnKey) else ColumnKey(column_key)
            row = self._data[rk]
            if row.get(ck) != value:
                row[ck] = value
                cells.add((rk, ck))
        if cells:
            self._evict(cells)
        return len(cells)

    def _evict(self, cells: set[tuple[RowKey, ColumnKey]]) -> None:
        row_keys = {rk for rk, _ in cells}
        indexes = {self._row_locations.get(rk) for rk in row_keys}
        indexes.discard(None)
        regions = [self._get_row_region(i) for i in indexes if i is not None]
        ys = {y for r in regions for y in range(r.y, r.y + r.height)}
        # Each of Textual's caches has its own key shape, so each is swept on its own.
        for cell_key in [k for k in self._cell_render_cache.keys()  # noqa: SIM118 (LRUCache)
                         if (k[0], k[1]) in cells]:
            self._cell_render_cache.discard(cell_key)
        for row_key in [k for k in self._row_render_cache.keys()  # noqa: SIM118
                        if k[0] in row_keys]:
            self._row_render_cache.discard(row_key)
        for index_key in [k for k in self._row_renderable_cache.keys()  # noqa: SIM118
                          if k[1] in indexes]:
            self._row_renderable_cache.discard(index_key)
        for line_key in [k for k in self._line_cache.keys()  # noqa: SIM118
                         if k[0] in ys]:
            self._line_cache.discard(line_key)
        for region in regions:
            self._refresh_region(region)

    def set_cell(self, row: int, column: int, value: Text) -> None:
        if row < len(self._shown) and self._shown[row][column] != value:
            cells = list(self._shown[row])
            cells[column] = value
            self._shown[row] = tuple(cells)
            row_key, column_key = self.coordinate_to_cell_key(Coordinate(row, column))
            self.update_cells([(row_key, column_key, value)])

    def show_rows(self, rows: Sequence[tuple[Text, ...]]) -> None:
        """Make the table show exactly `rows`, touching only cells that changed."""
        shown = self._shown
        changes: list[tuple[RowKey | str, ColumnKey | str, Text]] = []
        for i, row in enumerate(rows[: len(shown)]):
            old = shown[i]
            for c, (new_cell, old_cell) in enumerate(zip(row, old, strict=True)):
                if new_cell != old_cell:
                    changes.append((*self.coordinate_to_cell_key(Coordinate(i, c)), new_cell))
            shown[i] = row
        self.update_cells(changes)
        for i in range(len(shown), len(rows)):
            self.add_row(*rows[i], key=str(i))
            shown.append(rows[i])
        while len(shown) > len(rows):
            shown.pop()
            self.remove_row(str(len(shown)))
