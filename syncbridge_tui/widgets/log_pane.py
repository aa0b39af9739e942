"""The embedded worker's structured log, live; optionally only one job's lines.

Log lines carry upstream text (error messages, entity ids), so they go to a `Log` widget,
which never interprets markup, after text.clean strips control characters and escapes.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Log, Static

from syncbridge_tui.engine import LogLine
from syncbridge_tui.text import clean

_FIRST = ("job_id", "attempt", "job_type", "entity_id", "outcome", "error_type", "error")
_SKIP = {"event", "level", "timestamp", "worker_id", "correlation_id"}


def format_line(event: dict[str, Any]) -> str:
    ts = str(event.get("timestamp", ""))
    try:
        ts = datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(UTC).strftime("%H:%M:%S")
    except ValueError:
        ts = ts[:8]
    level = str(event.get("level", "info"))[:4].upper()
    parts = [ts, f"{level:<4}", str(event.get("event", ""))]
    keys = [k for k in _FIRST if k in event] + sorted(k for k in event
                                                       if k not in _FIRST and k not in _SKIP)
    for key in keys:
        value = event[key]
        if value is None:
            continue
        parts.append(f"{key}={value}")
    corr = event.get("correlation_id")
    if corr:
        parts.append(f"cid={str(corr)[:12]}")
    return clean(" ".join(parts), 400)


class LogPane(Vertical):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="pane")
        self.correlation_id: str | None = None
        self.job_id: int | None = None
        self.lines_shown = 0
        self._last_seq = 0

    def compose(self) -> ComposeResult:
        yield Static(id="log-title", classes="pane-title")
        yield Log(id="log", highlight=False, max_lines=5000)

    def on_mount(self) -> None:
        self._title()

    def focus_table(self) -> None:
        self.query_one(Log).focus()

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
        self.query_one(Log).clear()
        self.lines_shown = 0
        self._last_seq = 0
        self._title()
        self.feed(lines)

    def feed(self, lines: Iterable[LogLine]) -> None:
        out = []
        for line in lines:
            self._last_seq = max(self._last_seq, line.seq)
            if self.correlation_id and line.correlation_id != self.correlation_id:
                continue
            out.append(format_line(line.event))
        if out:
            self.query_one(Log).write_lines(out)
            self.lines_shown += len(out)

    @property
    def last_seq(self) -> int:
        return self._last_seq
