"""The console's top lines: where it is connected, what the embedded worker does, panes."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widgets import Static

from syncbridge_tui.text import clean

PANES = [("jobs", "1 Jobs"), ("dead", "2 Dead letters"), ("metrics", "3 Metrics"),
         ("workers", "4 Workers"), ("log", "5 Log"), ("upstreams", "6 Upstreams")]
WORKER_STYLES = {"running": "bold green", "paused": "bold yellow", "off": "dim",
                 "starting": "yellow", "stopping": "yellow", "stopped": "red"}


@dataclass(slots=True)
class HeaderInfo:
    database: str
    worker: str  # running | paused | off | starting | stopping | stopped
    concurrency: int | None
    jobs_per_second: float
    read_only: bool
    frozen: bool
    pane: str
    error: str | None = None
    worker_note: str = ""


class StatusHeader(Static):
    DEFAULT_CSS = """
    StatusHeader { height: 2; background: $panel; padding: 0 1; }
    """

    _info: HeaderInfo | None = None

    def show(self, info: HeaderInfo) -> None:
        self._info = info
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append("SyncBridge", style="bold")
        # Badges first: a narrow terminal cuts the line's end, never these.
        if info.read_only:
            t.append("  ")
            t.append(" READ-ONLY ", style="bold black on yellow")
        if info.frozen:
            t.append("  ")
            t.append(" FROZEN ", style="bold white on blue")
        t.append("  worker ", style="dim")
        t.append(info.worker, style=WORKER_STYLES.get(info.worker, ""))
        if info.worker_note:
            t.append(f" ({info.worker_note})", style="dim")
        t.append("  concurrency ", style="dim")
        t.append("-" if info.concurrency is None else str(info.concurrency))
        t.append("  jobs/s ", style="dim")
        t.append(f"{info.jobs_per_second:.1f}")
        if info.error:
            t.append("  ")
            t.append(clean(info.error, 80), style="bold red")
        t.append("  db ", style="dim")
        t.append(clean(info.database))
        tabs = Text(no_wrap=True, overflow="ellipsis")
        for key, label in PANES:
            style = "bold reverse" if key == info.pane else "dim"
            tabs.append(f" {label} ", style=style)
            tabs.append(" ")
        if info.pane not in dict(PANES):  # a screen over the panes, e.g. "job 12"
            tabs.append("> ", style="dim")
            tabs.append(f" {info.pane} ", style="bold reverse")
        # Each line cut to the width (a wrapped first line would push the tabs away).
        width = self.content_size.width or 200
        for line in (t, tabs):
            line.truncate(width, overflow="ellipsis")
        self.update(Text("\n").join([t, tabs]))

    def on_resize(self) -> None:
        if self._info is not None:
            self.show(self._info)
