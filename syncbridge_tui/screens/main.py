"""The main screen: the header, one pane at a time (1-5), the footer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import ContentSwitcher, Footer

from syncbridge_tui import keymap
from syncbridge_tui.widgets.header import StatusHeader
from syncbridge_tui.widgets.job_list import DeadLettersPane, JobList, JobsPane
from syncbridge_tui.widgets.log_pane import LogPane
from syncbridge_tui.widgets.metrics_pane import MetricsPane
from syncbridge_tui.widgets.workers_pane import WorkersPane

if TYPE_CHECKING:
    from syncbridge_tui.app import SyncBridgeApp

PANE_IDS = ("jobs", "dead", "metrics", "workers", "log")


class MainScreen(Screen[None]):
    # esc on the log pane (filtered to one job) goes back to every line.
    BINDINGS = keymap.bindings(keymap.LOG)

    def compose(self) -> ComposeResult:
        yield StatusHeader(id="header")
        with ContentSwitcher(initial="jobs", id="panes"):
            yield JobsPane(id="jobs")
            yield DeadLettersPane(id="dead")
            yield MetricsPane(id="metrics")
            yield WorkersPane(id="workers")
            yield LogPane(id="log")
        yield Footer()

    def on_mount(self) -> None:
        self.call_after_refresh(self.active_pane().focus_table)

    @property
    def pane(self) -> str:
        return self.query_one(ContentSwitcher).current or "jobs"

    def active_pane(self) -> Any:
        return self.query_one(f"#{self.pane}")

    def switch(self, pane: str) -> None:
        self.query_one(ContentSwitcher).current = pane
        active = self.active_pane()
        if hasattr(active, "refresh_now"):
            active.refresh_now()
        active.focus_table()

    def job_list(self) -> JobList | None:
        pane = self.active_pane()
        return pane if isinstance(pane, JobList) else None

    def live_target(self) -> Any:
        pane = self.active_pane()
        return pane if hasattr(pane, "plan") else None

    def action_log_all(self) -> None:
        log = self.query_one(LogPane)
        if self.pane == "log" and log.correlation_id:
            app: SyncBridgeApp = self.app  # type: ignore[assignment]
            log.only(None, None, app.log_buffer.since(0))
