"""Every worker with a heartbeat; a worker that stopped beating without saying goodbye
is marked stale (its leases will expire and be recovered by the others). Below them, the
app's recurring schedules (core.schedules): how each repeats, its next slot, and its last
slot's job and that job's state (or that the slot was skipped)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from core import clock, heartbeats, schedules
from core.db import Database
from core.heartbeats import stale_after
from core.records import WorkerInfo
from core.schedules import Schedule, ScheduleState
from syncbridge_tui.cells import cell, status_cell
from syncbridge_tui.text import ago, until
from syncbridge_tui.widgets.window_table import WindowTable

COLUMNS = [("WORKER", 34), ("STATE", 8), ("HOST", 16), ("PID", 7), ("STARTED", 10),
           ("LAST SEEN", 10), ("CONC", 5), ("IN FLIGHT", 9), ("PROCESSED", 9), ("", 6)]
SCHEDULE_COLUMNS = [("SCHEDULE", 20), ("TYPE", 10), ("REPEATS", 18), ("NEXT SLOT", 10),
                    ("AT (UTC)", 16), ("LAST SLOT", 9), ("LAST JOB", 8), ("JOB STATE", 30)]


class WorkersPane(Vertical):
    def __init__(self, db: Database, lease_seconds: float, *, id: str | None = None,
                 schedules: Sequence[Schedule] = ()) -> None:
        super().__init__(id=id, classes="pane")
        self.db = db
        self.lease_seconds = lease_seconds
        self.schedules = list(schedules)
        self.loaded = False
        self.worker_rows: list[WorkerInfo] = []
        self.schedule_rows: list[ScheduleState] = []

    def compose(self) -> ComposeResult:
        yield Static(id="workers-title", classes="pane-title")
        table = WindowTable(id="workers-table", windowed=False)
        for label, width in COLUMNS:
            table.add_column(label, width=width, key=label or "flag")
        yield table
        # Only an app that declares recurring schedules gets the section.
        yield Static(id="schedules-title", classes="pane-title")
        sched = WindowTable(id="schedules-table", windowed=False)
        for label, width in SCHEDULE_COLUMNS:
            sched.add_column(label, width=width, key=label)
        yield sched

    def on_mount(self) -> None:
        for selector in ("#schedules-title", "#schedules-table"):
            self.query_one(selector).display = bool(self.schedules)

    def focus_table(self) -> None:
        self.query_one("#workers-table", DataTable).focus()

    def refresh_now(self) -> None:
        """Nothing to do: every poll reads the workers (a few rows)."""

    def plan(self) -> Callable[[], tuple[list[WorkerInfo], list[ScheduleState]]]:
        db, declared = self.db, self.schedules

        def fetch() -> tuple[list[WorkerInfo], list[ScheduleState]]:
            return heartbeats.list_workers(db), schedules.schedule_states(db, declared)

        return fetch

    def apply(self, data: tuple[list[WorkerInfo], list[ScheduleState]]) -> None:
        workers, states = data
        self.apply_schedules(states)
        limit = stale_after(self.lease_seconds)
        now = clock.now()
        table = self.query_one("#workers-table", WindowTable)
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

    def apply_schedules(self, states: list[ScheduleState]) -> None:
        if not self.schedules:
            return
        table = self.query_one("#schedules-table", WindowTable)
        table.clear()  # a few rows: rewritten whole
        for st in states:
            if st.last_slot_at is None:
                last, job, state = cell("never", "dim"), cell("-", "dim"), cell("-", "dim")
            elif st.last_job_id is None:
                last, job = cell(ago(st.last_slot_at)), cell("-", "dim")
                state = cell("skipped: previous still active", "yellow")
            else:
                last, job = cell(ago(st.last_slot_at)), cell(st.last_job_id)
                state = status_cell(st.last_job_status or "gone")
            at = (clock.iso(st.next_slot) or "")[:16].replace("T", " ")
            table.add_row(cell(st.name), cell(st.job_type), cell(st.spec),
                          cell(until(st.next_slot)), cell(at, "dim"), last, job, state,
                          key=st.name)
        self.schedule_rows = states
        title = Text.assemble(("Schedules", "bold"), ("  recurring, once per slot across "
                                                      "every worker: ", "dim"),
                              str(len(states)))
        self.query_one("#schedules-title", Static).update(title)
