"""The main screen: the header, one pane at a time (1-6), the footer."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import ContentSwitcher, Footer

from syncbridge_tui import keymap
from syncbridge_tui.context import Console
from syncbridge_tui.live import LiveView, Pane
from syncbridge_tui.widgets.header import StatusHeader
from syncbridge_tui.widgets.job_list import DeadLettersPane, JobList, JobsPane
from syncbridge_tui.widgets.log_pane import LogPane
from syncbridge_tui.widgets.metrics_pane import MetricsPane
from syncbridge_tui.widgets.upstreams_pane import UpstreamsPane
from syncbridge_tui.widgets.workers_pane import WorkersPane

PANE_IDS = ("jobs", "dead", "metrics", "workers", "log", "upstreams")


class MainScreen(Screen[None]):
    # esc on the log pane (filtered to one job) goes back to every line.
    BINDINGS = keymap.bindings(keymap.LOG)

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console
        jobs, dead = JobsPane(console, id="jobs"), DeadLettersPane(console, id="dead")
        metrics = MetricsPane(console.db, id="metrics")
        workers = WorkersPane(console.db, console.settings.lease_seconds, id="workers",
                              schedules=console.schedules())
        self.log_pane = LogPane(console.log_buffer, id="log")
        upstreams = UpstreamsPane(console, id="upstreams")
        self._panes: dict[str, Pane] = {"jobs": jobs, "dead": dead, "metrics": metrics,
                                        "workers": workers, "log": self.log_pane,
                                        "upstreams": upstreams}
        # The panes the poll refreshes (the log pane is fed from the log buffer instead).
        self._live: dict[str, LiveView[Any]] = {"jobs": jobs, "dead": dead,
                                                "metrics": metrics, "workers": workers,
                                                "upstreams": upstreams}
        self._widgets = (jobs, dead, metrics, workers, self.log_pane, upstreams)

    def compose(self) -> ComposeResult:
        yield StatusHeader(id="header")
        with ContentSwitcher(initial="jobs", id="panes"):
            yield from self._widgets
        yield Footer()

    def on_mount(self) -> None:
        self.call_after_refresh(self.active_pane().focus_table)

    @property
    def pane(self) -> str:
        return self.query_one(ContentSwitcher).current or "jobs"

    def active_pane(self) -> Pane:
        return self._panes[self.pane]

    def switch(self, pane: str) -> None:
        self.query_one(ContentSwitcher).current = pane
        active = self.active_pane()
        active.refresh_now()
        active.focus_table()

    def job_list(self) -> JobList | None:
        pane = self.active_pane()
        return pane if isinstance(pane, JobList) else None

    def live_target(self) -> LiveView[Any] | None:
        return self._live.get(self.pane)

    def action_log_all(self) -> None:
        log = self.log_pane
        if self.pane == "log" and log.correlation_id:
            log.only(None, None, self.console.log_buffer.since(0))
