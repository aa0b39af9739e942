"""The console's top lines: where it is connected, what the embedded worker does, panes."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widgets import Static

from syncbridge_tui.text import clean

PANES = [("jobs", "1 Jobs"), ("dead", "2 Dead letters"), ("metrics", "3 Metrics"),
         ("workers", "4 Workers"), ("log", "5 Log")]
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

    def show(self, info: HeaderInfo) -> None:
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append("SyncBridge", style="bold")
        t.append("  db ", style="dim")
        t.append(clean(info.database))
        t.append("  worker ", style="dim")
        t.append(info.worker, style=WORKER_STYLES.get(info.worker, ""))
        if info.worker_note:
            t.append(f" ({info.worker_note})", style="dim")
        t.append("  concurrency ", style="dim")
        t.append("-" if info.concurrency is None else str(info.concurrency))
        t.append("  jobs/s ", style="dim")
        t.append(f"{info.jobs_per_second:.1f}")
        if info.read_only:
            t.append("  ")
            t.append(" READ-ONLY ", style="bold black on yellow")
        if info.frozen:
            t.append("  ")
            t.append(" FROZEN ", style="bold white on blue")
        if info.error:
            t.append("  ")
            t.append(clean(info.error, 80), style="bold red")
        t.append("\n")
        for key, label in PANES:
            style = "bold reverse" if key == info.pane else "dim"
            t.append(f" {label} ", style=style)
            t.append(" ")
        if info.pane not in dict(PANES):  # a screen over the panes, e.g. "job 12"
            t.append("> ", style="dim")
            t.append(f" {info.pane} ", style="bold reverse")
        self.update(t)
