"""One job: every field, its replay links (both ways, followable) and its attempts."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from core import reads
from core.reads import attempt_number
from core.records import Attempt, Job
from syncbridge_tui import keymap
from syncbridge_tui.cells import STATUS_STYLES, cell, dash, outcome_cell
from syncbridge_tui.context import Console
from syncbridge_tui.text import ago, clean, ms, until
from syncbridge_tui.widgets.header import StatusHeader
from syncbridge_tui.widgets.window_table import WindowTable

# Sized to fit 140 columns; the full messages are in the fields above the table.
ATTEMPT_COLUMNS = [("#", 3), ("WORKER", 22), ("STARTED", 10), ("DURATION", 9),
                   ("OUTCOME", 13), ("ERROR TYPE", 19), ("HTTP", 4), ("MESSAGE", 38)]


@dataclass(slots=True)
class DetailData:
    job: Job | None
    attempts: list[Attempt]
    replays: list[int]
    origin_attempt: int | None = None  # the number of the attempt a replay started from


class DetailScreen(Screen[None]):
    BINDINGS = keymap.bindings(keymap.DETAIL)

    def __init__(self, console: Console, job_id: int) -> None:
        super().__init__()
        self.console = console
        self.job_id = job_id
        self.data: DetailData | None = None
        self.loaded = False
        self._attempt_rows = 0

    def compose(self) -> ComposeResult:
        yield StatusHeader(id="header")
        with Vertical(id="detail", classes="pane"):
            yield Static(Text(f"Job {self.job_id}", style="bold"), id="detail-title",
                         classes="pane-title")
            yield Static(id="fields")
            yield Static(id="attempts-title", classes="pane-title")
            table = WindowTable(id="attempts", windowed=False)
            for label, width in ATTEMPT_COLUMNS:
                table.add_column(label, width=width, key=label)
            yield table
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()

    def live_target(self) -> DetailScreen:
        return self

    def plan(self) -> Callable[[], DetailData]:
        db, job_id = self.console.db, self.job_id

        def fetch() -> DetailData:
            job = reads.get_job(db, job_id)
            origin = None
            if job is not None and job.replay_of_attempt_id is not None:
                origin = attempt_number(db, job.replay_of_attempt_id)
            return DetailData(job, reads.attempts_for(db, job_id), reads.replays_of(db, job_id),
                              origin)

        return fetch

    def apply(self, data: DetailData) -> None:
        self.data = data
        self.loaded = True
        job = data.job
        if job is None:
            self.query_one("#fields", Static).update(
                Text(f"job {self.job_id} not found", style="bold red"))
            return
        title = Text.assemble(("Job ", "bold"), (str(job.id), "bold"), "  ",
                              (job.job_type, "bold"), " ", (clean(job.entity_id), "bold"),
                              "  ", (job.status, STATUS_STYLES.get(job.status, "")))
        if job.is_replay:
            title.append(f"  replay of job {job.replay_of_job_id}", style="cyan")
        self.query_one("#detail-title", Static).update(title)
        self.query_one("#fields", Static).update(self._fields(job, data))
        self._attempts(data.attempts)

    def _fields(self, job: Job, data: DetailData) -> Table:
        replays = data.replays
        grid = Table.grid(padding=(0, 1), expand=True)
        grid.add_column(style="dim", no_wrap=True, width=14)
        grid.add_column(ratio=1)
        grid.add_column(style="dim", no_wrap=True, width=14)
        grid.add_column(ratio=1)

        def t(value: object, style: str = "") -> Text:
            return Text(clean(value) if value not in (None, "") else "-", style=style)

        next_run = until(job.next_run_at) if job.status == "pending" else "-"
        lease = "-"
        if job.lease_owner:
            lease = f"{job.lease_owner} (token {job.lease_token})"
        grid.add_row("status", t(job.status, STATUS_STYLES.get(job.status, "")),
                     "attempts", t(f"{job.attempt_count} of {job.max_attempts}"))
        grid.add_row("correlation", t(job.correlation_id), "next run", t(next_run))
        grid.add_row("created", t(f"{ago(job.created_at)}  ({clock_iso(job.created_at)})"),
                     "updated", t(ago(job.updated_at)))
        grid.add_row("finished", t(ago(job.finished_at) if job.finished_at else None),
                     "lease owner", t(lease))
        grid.add_row("last claimed", t(ago(job.lease_acquired_at)
                                         if job.lease_acquired_at else None),
                     "lease expires", t(until(job.lease_expires_at)
                                        if job.lease_expires_at else None))
        origin = "-"
        if job.is_replay:
            origin = f"job {job.replay_of_job_id}"
            if data.origin_attempt is not None:
                origin += f", from its attempt {data.origin_attempt}"
            origin += "  [o]"
        newer = ", ".join(f"job {i}" for i in replays) + "  [n]" if replays else "-"
        grid.add_row("replay of", t(origin, "cyan" if job.is_replay else ""),
                     "replayed as", t(newer, "cyan" if replays else ""))
        grid.add_row("last error", t(f"{job.last_error_type}: {job.last_error}"
                                     if job.last_error_type else None, "red"),
                     "dead error", t(f"{job.dead_error_type}: {job.dead_error}"
                                     if job.dead_error_type else None, "bold magenta"))
        payload = json.dumps(job.payload, ensure_ascii=False) if job.payload else None
        result = json.dumps(job.result, ensure_ascii=False) if job.result else None
        grid.add_row("payload", Text(clean(payload, 200) or "-"),
                     "result", Text(clean(result, 200) or "-"))
        return grid

    def _attempts(self, attempts: list[Attempt]) -> None:
        table: DataTable[Text] = self.query_one(DataTable)
        title = Text.assemble(("Attempts", "bold"), (f"  {len(attempts)}", "dim"))
        self.query_one("#attempts-title", Static).update(title)
        for i, a in enumerate(attempts):
            values = [cell(a.number), cell(a.worker_id, "dim"), cell(ago(a.started_at)),
                      cell(ms(a.duration_ms)), outcome_cell(a.outcome),
                      dash(a.error_type, "red" if a.error_type else ""),
                      dash(a.http_status), dash(a.error_message)]
            key = str(a.number)
            if i < self._attempt_rows:
                for (label, _), value in zip(ATTEMPT_COLUMNS, values, strict=True):
                    table.update_cell(key, label, value)
            else:
                table.add_row(*values, key=key)
        self._attempt_rows = len(attempts)

    # --- actions ---------------------------------------------------------------------------------

    def action_back(self) -> None:
        self.app.pop_screen()
        self.console.request_poll()

    def action_job_action(self, verb: str) -> None:
        job = self.data.job if self.data else None
        if job is None:
            return
        self.console.job_action(verb, {job.id: job.status}, on_done=lambda _ids: None)

    def action_open_origin(self) -> None:
        job = self.data.job if self.data else None
        if job is None or not job.is_replay or job.replay_of_job_id is None:
            self.app.notify("this job is not a replay", severity="warning")
            return
        self.console.open_detail(job.replay_of_job_id)

    def action_open_replay(self) -> None:
        if not self.data or not self.data.replays:
            self.app.notify("this job has not been replayed", severity="warning")
            return
        self.console.open_detail(self.data.replays[-1])

    def action_job_logs(self) -> None:
        job = self.data.job if self.data else None
        if job is not None:
            self.console.show_logs(job.id, job.correlation_id)


def clock_iso(ts: float | None) -> str:
    from core.clock import iso

    return (iso(ts) or "-").replace("+00:00", "Z")
