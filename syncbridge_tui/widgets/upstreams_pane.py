"""Upstream protection (core.upstream_protection), one row per upstream: its state (closed,
open, half-open, or paused until …), its rate (configured, or the adaptive one a 429 set)
and in-flight limit, the jobs it holds, the 429s and 5xx of the last minute, the next
probe. Keys pause, resume, close (reset) or open a breaker; each is confirmed and audited
(syncbridge_tui.actions).

A poll is two reads of the few upstream rows and one count of the pending and running jobs
by type; on a big queue that count costs more, so it is repeated at most every 5x its cost
(as the metrics pane does)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from core import clock
from core import upstream_protection as up
from core.upstream_protection import UpstreamState
from syncbridge_tui import keymap
from syncbridge_tui.cells import cell
from syncbridge_tui.context import Console
from syncbridge_tui.text import clean, span, until
from syncbridge_tui.widgets.window_table import WindowTable

COLUMNS = [("UPSTREAM", 14), ("STATE", 9), ("BREAKER", 9), ("PAUSE ENDS", 10), ("RATE", 7),
           ("NOW", 15), ("IN FLIGHT", 9), ("WAITING", 7), ("429s", 5), ("5xx", 5),
           ("FAILS", 5), ("NEXT PROBE", 10)]
STATE_STYLES = {"closed": "green", "open": "bold red", "half-open": "bold yellow",
                "paused": "bold yellow"}
BACKOFF_FACTOR = 5.0


@dataclass(slots=True)
class UpstreamsData:
    states: list[UpstreamState]
    seconds: float  # what the reads cost


def shown_state(s: UpstreamState) -> str:
    """closed / open / half-open / paused (a pause wins while it lasts)."""
    return s.state.replace("_", "-")


def rate_text(configured: float | None) -> str:
    return "-" if configured is None else f"{configured:g}/s"


def current_rate_text(s: UpstreamState) -> str:
    if s.configured_rate is not None:
        return f"{s.configured_rate:g}/s"
    if s.current_rate is not None:
        return f"{s.current_rate:.1f}/s adaptive"
    return "unlimited"


def probe_text(s: UpstreamState) -> str:
    if s.breaker == up.HALF_OPEN:
        return "probing"
    if s.breaker == up.OPEN:
        return until(s.next_probe_at) if s.next_probe_at is not None else "now"
    return "-"


def describe(s: UpstreamState, failures_to_open: int) -> Text:
    """The cursor's upstream in words, under the table."""
    name = clean(s.name, 40)
    t = Text()
    t.append(name, style="bold")
    t.append(": ")
    if s.paused_until is not None:
        t.append(f"paused for another {span(max(0.0, s.paused_until - clock.now()))}",
                 style="bold yellow")
        t.append(" (a 429's Retry-After or an operator); every job calling it stays pending. ")
    if s.breaker == up.OPEN:
        t.append("breaker open", style="bold red")
        if s.failures:
            t.append(f" after {s.failures} failures in a row")
        t.append(f": its jobs are held; one probe job "
                 f"{until(s.next_probe_at) if s.next_probe_at else 'now'} (cool-down "
                 f"{s.cooldown_seconds:g}s) closes it or reopens it for longer.")
    elif s.breaker == up.HALF_OPEN:
        t.append("half-open", style="bold yellow")
        t.append(": one probe job is out")
        if s.probe_owner:
            t.append(f" (worker {clean(s.probe_owner, 40)})")
        t.append("; its result closes or reopens the breaker.")
    elif s.paused_until is None:
        t.append("closed", style="green")
        t.append(": jobs calling it run")
        if s.failures:
            t.append(f"; {s.failures} failure(s) counted towards opening "
                     f"({failures_to_open} open it)", style="yellow")
        t.append(".")
    t.append("  p pause · u resume · c close · o open", style="dim")
    return t


class UpstreamsPane(Vertical):
    BINDINGS = keymap.bindings(keymap.UPSTREAMS)

    def __init__(self, console: Console, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="pane")
        self.console = console
        self.scope = console.upstream_scope()
        self.loaded = False
        self.rows: list[UpstreamState] = []
        self._next_due = 0.0

    def compose(self) -> ComposeResult:
        yield Static(Text("Upstreams", style="bold"), id="upstreams-title",
                     classes="pane-title")
        table = WindowTable(id="upstreams-table", windowed=False)
        for label, width in COLUMNS:
            table.add_column(label, width=width, key=label)
        yield table
        yield Static(id="upstream-detail")

    def focus_table(self) -> None:
        self.query_one("#upstreams-table", DataTable).focus()

    def refresh_now(self) -> None:
        """Switched to, or an action done: read again at the next poll."""
        self._next_due = 0.0

    # --- polling ---------------------------------------------------------------------------------

    def plan(self) -> Callable[[], UpstreamsData | None]:
        if time.monotonic() < self._next_due:
            return lambda: None
        db, scope = self.console.db, self.scope

        def fetch() -> UpstreamsData:
            t0 = time.monotonic()
            by_type = up.fleet_type_upstreams(db, scope.declared)
            found = up.states(db, policy=scope.policy, upstreams_by_type=by_type)
            return UpstreamsData(found, time.monotonic() - t0)

        return fetch

    def apply(self, data: UpstreamsData | None) -> None:
        if data is None:
            return
        self._next_due = time.monotonic() + data.seconds * BACKOFF_FACTOR
        table = self.query_one("#upstreams-table", WindowTable)
        keys = {str(r.value) for r in table.rows}
        changes = []
        for s in data.states:
            values = self.row(s)
            if s.name in keys:
                changes += [(s.name, label, value)
                            for (label, _), value in zip(COLUMNS, values, strict=True)]
            else:
                table.add_row(*values, key=s.name)
        table.update_cells(changes)  # only what changed is repainted
        for gone in keys - {s.name for s in data.states}:
            table.remove_row(gone)
        self.rows = data.states
        self.update_title()
        self.show_detail()
        self.loaded = True

    def row(self, s: UpstreamState) -> list[Text]:
        state = shown_state(s)
        breaker = s.breaker.replace("_", "-")
        mif = s.max_in_flight
        in_flight = f"{s.in_flight}/{mif}" if mif is not None else str(s.in_flight)
        full = mif is not None and s.in_flight >= mif
        return [cell(s.name, "bold"), cell(state, STATE_STYLES.get(state, "")),
                cell(breaker, STATE_STYLES.get(breaker, "") if breaker != "closed" else "dim"),
                cell(until(s.paused_until), "bold yellow" if s.paused_until else "dim"),
                cell(rate_text(s.configured_rate), "" if s.configured_rate else "dim"),
                cell(current_rate_text(s), "yellow" if s.configured_rate is None
                     and s.current_rate is not None else ""),
                cell(in_flight, "yellow" if full else ""),
                cell(s.waiting, "yellow" if s.waiting and state != "closed" else ""),
                cell(s.recent_429, "yellow" if s.recent_429 else "dim"),
                cell(s.recent_5xx, "red" if s.recent_5xx else "dim"),
                cell(s.failures, "red" if s.failures else "dim"),
                cell(probe_text(s), "bold" if s.breaker != up.CLOSED else "dim")]

    def update_title(self) -> None:
        states = [shown_state(s) for s in self.rows]
        t = Text.assemble(("Upstreams", "bold"), ("  known: ", "dim"), str(len(self.rows)))
        for what in ("open", "half-open", "paused"):
            n = states.count(what)
            if n:
                t.append(f"  {n} {what}", style=STATE_STYLES[what])
        t.append("  (held jobs stay pending: no attempt, no budget spent; 429s and 5xx: "
                 "last minute)", style="dim")
        if not self.rows:
            t.append("  none yet: a worker records its app's upstreams when it starts",
                     style="dim")
        self.query_one("#upstreams-title", Static).update(t)

    def current(self) -> UpstreamState | None:
        """The cursor's upstream (rows are keyed by name: one added later sits last)."""
        table = self.query_one("#upstreams-table", WindowTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((s for s in self.rows if s.name == key), None)

    def show_detail(self) -> None:
        s = self.current()
        detail = self.query_one("#upstream-detail", Static)
        failures = self.scope.policy.breaker_failures
        detail.update(describe(s, failures) if s is not None else Text(""))

    @on(DataTable.RowHighlighted, "#upstreams-table")
    def _highlighted(self) -> None:
        if self.loaded:
            self.show_detail()

    # --- actions ---------------------------------------------------------------------------------

    def action_upstream_action(self, verb: str) -> None:
        self.console.upstream_action(verb, self.current(), self._acted)

    def _acted(self) -> None:
        self.refresh_now()
