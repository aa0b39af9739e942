"""Every worker with a heartbeat; a worker that stopped beating without saying goodbye
is marked stale (its leases will expire and be recovered by the others)."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from core import clock, heartbeats
from core.db import Database
from core.heartbeats import stale_after
from core.records import WorkerInfo
from syncbridge_tui.cells import cell
from syncbridge_tui.text import ago
from syncbridge_tui.widgets.window_table import WindowTable

COLUMNS = [("WORKER", 34), ("STATE", 8), ("HOST", 16), ("PID", 7), ("STARTED", 10),
           ("LAST SEEN", 10), ("CONC", 5), ("IN FLIGHT", 9), ("PROCESSED", 9), ("", 6)]


class WorkersPane(Vertical):
    def __init__(self, db: Database, lease_seconds: float, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="pane")
        self.db = db
        self.lease_seconds = lease_seconds
        self.loaded = False
        self.worker_rows: list[WorkerInfo] = []

    def compose(self) -> ComposeResult:
        yield Static(id="workers-title", classes="pane-title")
        table = WindowTable(id="workers-table", windowed=False)
        for label, width in COLUMNS:
            table.add_column(label, width=width, key=label or "flag")
        yield table

    def focus_table(self) -> None:
        self.query_one(DataTable).focus()

    def refresh_now(self) -> None:
        """Nothing to do: every poll reads the workers (a few rows)."""

    def plan(self) -> Callable[[], list[WorkerInfo]]:
        db = self.db
        return lambda: heartbeats.list_workers(db)

    def apply(self, workers: list[WorkerInfo]) -> None:
        limit = stale_after(self.lease_seconds)
        now = clock.now()
        table = self.query_one(WindowTable)
        keys = {str(r.value) for r in table.rows}
        changes = []
        stale_count = 0
        for w in workers:
            stale = w.state != "stopped" and now - w.last_seen_at > limit
            stale_count += stale
            dim = "dim" if w.state == "stopped" else ""
            flag = cell("STALE", "bold red") if stale else cell("")
            state_style = {"running": "green", "paused": "yellow"}.get(w.state, dim)
            values = [cell(w.id, dim), cell(w.state, state_style), cell(w.host, dim),
                      cell(w.pid, dim), cell(ago(w.started_at), dim),
                      cell(ago(w.last_seen_at), "bold red" if stale else dim),
                      cell(w.concurrency, dim), cell(w.in_flight, dim),
                      cell(w.processed, dim), flag]
            if w.id in keys:
                changes += [(w.id, label or "flag", value)
                            for (label, _), value in zip(COLUMNS, values, strict=True)]
            else:
                table.add_row(*values, key=w.id)
        table.update_cells(changes)  # only what changed (LAST SEEN) is repainted
        gone = keys - {w.id for w in workers}
        for key in gone:
            table.remove_row(key)
        self.worker_rows = workers
        title = Text.assemble(("Workers", "bold"), ("  with a heartbeat: ", "dim"),
                              str(len(workers)))
        if stale_count:
            title.append(f"  {stale_count} stale (no heartbeat for {limit:.0f}s)", "bold red")
        self.query_one("#workers-title", Static).update(title)
        self.loaded = True
