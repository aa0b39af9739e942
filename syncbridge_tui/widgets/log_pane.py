"""The embedded worker's structured log, live; optionally only one job's lines.

Log lines carry upstream text (error messages, entity ids): each is written to the RichLog
as a rich Text built from text.clean'd strings (markup=False), so nothing in a line can
style or move anything; long lines wrap instead of hiding the error behind a scrollbar.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import RichLog, Static

from syncbridge_tui import keymap
from syncbridge_tui.engine import LogBuffer, LogLine
from syncbridge_tui.text import clean

_FIRST = ("job_id", "attempt", "job_type", "entity_id", "outcome", "error_type",
          "http_status", "duration_ms")
_LAST = ("error",)  # the long, untrusted part goes at the end
_SKIP = {"event", "level", "timestamp", "worker_id", "correlation_id"}
# A worker at full speed logs thousands of lines a second; nobody reads them at that rate,
# and wrapping and styling them all would take the UI's time (a RichLog renders every line
# it is given at write time, so a few hundred lines would stall the UI). Each feed writes the newest
# screenful (at most FEED_MAX lines) and says how many it passed over (the log file has
# every line); the pane keeps SHOWN_MAX lines to scroll back through. Shown again at the
# same width and filter, it keeps what it had and only catches up.
FEED_MAX = 300
SHOWN_MAX = 1000
LEVEL_STYLES = {"WARN": "yellow", "ERRO": "bold red", "DEBU": "dim"}


def format_line(event: dict[str, Any]) -> str:
    ts = str(event.get("timestamp", ""))
    try:
        ts = datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(UTC).strftime("%H:%M:%S")
    except ValueError:
        ts = ts[:8]
    level = str(event.get("level", "info"))[:4].upper()
    parts = [ts, f"{level:<4}", str(event.get("event", ""))]
    rest = sorted(k for k in event if k not in _FIRST + _LAST and k not in _SKIP)
    for key in [k for k in _FIRST if k in event] + rest:
        if event[key] is not None:
            parts.append(f"{key}={event[key]}")
    corr = event.get("correlation_id")
    if corr:
        parts.append(f"cid={str(corr)[:12]}")
    for key in _LAST:
        if event.get(key) is not None:
            parts.append(f"{key}={event[key]}")
    return clean(" ".join(parts), 600)


def styled_line(event: dict[str, Any]) -> Text:
    line = format_line(event)
    text = Text(line)
    level = line[9:13]
    text.stylize("dim", 0, 8)
    text.stylize(LEVEL_STYLES.get(level, "green"), 9, 13)
    return text


class LogView(RichLog):
    """RichLog that scrolls with the console's movement keys too."""

    BINDINGS = keymap.bindings(keymap.MOVE)

    def action_cursor_down(self) -> None:
        self.scroll_down(animate=False)

    def action_cursor_up(self) -> None:
        self.scroll_up(animate=False)

    def action_scroll_top(self) -> None:
        self.scroll_home(animate=False)

    def action_scroll_bottom(self) -> None:
        self.scroll_end(animate=False)


class LogPane(Vertical):
    def __init__(self, log_buffer: LogBuffer, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="pane")
        self.log_buffer = log_buffer
        self.correlation_id: str | None = None
        self.job_id: int | None = None
        self.lines_shown = 0
        self._last_seq = 0
        # What the lines in the RichLog were written for: (width, correlation id).
        self._written_for: tuple[int, str | None] | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="log-title", classes="pane-title")
        yield LogView(id="log", highlight=False, markup=False, wrap=True, max_lines=SHOWN_MAX)

    def on_mount(self) -> None:
        self._title()

    def refresh_now(self) -> None:
        """Shown again, once laid out: catch up with the lines that arrived meanwhile, or
        re-read the buffer if the width (RichLog wraps at write time, and a hidden pane has
        none) or the job filter changed."""
        self.call_after_refresh(self._catch_up)

    def _catch_up(self) -> None:
        if self._written_for != (self._width(), self.correlation_id):
            self.only(self.job_id, self.correlation_id, self.log_buffer.since(0))
        else:
            self.feed(self.log_buffer.since(self._last_seq))

    def _width(self) -> int:
        return self.query_one(RichLog).scrollable_content_region.width

    def feed_max(self) -> int:
        """A screenful: no line can take less than one row."""
        height = self.query_one(RichLog).scrollable_content_region.height
        return min(FEED_MAX, height) if height > 0 else FEED_MAX

    def focus_table(self) -> None:
        self.query_one(RichLog).focus()

    def _title(self) -> None:
        t = Text("Log", style="bold")
        if self.correlation_id:
            t.append(f"  job {self.job_id} only", style="bold yellow")
            t.append(f" (correlation {clean(self.correlation_id)})  esc: every line",
                     style="dim")
        else:
            t.append("  the embedded worker's structured log (also in SYNCBRIDGE_LOG_FILE "
                     "when set)", style="dim")
        self.query_one("#log-title", Static).update(t)

    def only(self, job_id: int | None, correlation_id: str | None,
             lines: Iterable[LogLine]) -> None:
        """Show one job's lines (or every line with None), re-reading the buffer."""
        self.job_id, self.correlation_id = job_id, correlation_id
        self.query_one(RichLog).clear()
        self.lines_shown = 0
        self._last_seq = 0
        self._title()
        self.feed(lines)

    def feed(self, lines: Iterable[LogLine]) -> None:
        log = self.query_one(RichLog)
        # Wrap at the pane's width: RichLog would measure against the console's size.
        width = log.scrollable_content_region.width or None
        self._written_for = (width or 0, self.correlation_id)
        most = self.feed_max()
        wanted = []
        for line in lines:
            self._last_seq = max(self._last_seq, line.seq)
            if self.correlation_id and line.correlation_id != self.correlation_id:
                continue
            wanted.append(line)
        if len(wanted) > most:
            skipped = len(wanted) - most
            wanted = wanted[-most:]
            log.write(Text(f"… {skipped:,} more lines arrived faster than anyone reads; the "
                           f"newest {most} follow (SYNCBRIDGE_LOG_FILE has every line)",
                           style="dim italic"), width=width)
        for line in wanted:
            log.write(styled_line(line.event), width=width)
            self.lines_shown += 1

    @property
    def last_seq(self) -> int:
        return self._last_seq
