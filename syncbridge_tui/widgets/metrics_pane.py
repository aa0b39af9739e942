"""Queue health from core.metrics: every metric per job type, sparklines, percentiles."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Sparkline, Static

from core import metrics
from core.db import Database
from syncbridge_tui.cells import cell
from syncbridge_tui.commands.health import retention_line
from syncbridge_tui.text import ms, pct
from syncbridge_tui.widgets.window_table import WindowTable

BUCKETS, BUCKET_SECONDS = 30, 10.0
COLUMNS = [("TYPE", 9), ("TOTAL", 7), ("PEND", 5), ("RUN", 5), ("OK", 5), ("FAIL", 5),
           ("DEAD", 5), ("CANC", 5), ("OK%", 6), ("RETRY", 5), ("AVG", 8), ("P50", 8),
           ("P95", 8), ("DUE", 5), ("OLDEST", 7), ("DONE/MIN", 8)]


@dataclass(slots=True)
class MetricsData:
    metrics: metrics.Metrics
    finished: list[int]
    failures: list[int]
    seconds: float  # what the queries cost


# metrics.collect is one pass over the jobs table, costly on a big queue; a costly collect
# is repeated at most every 5x its cost, so the pane never keeps a core busy.
BACKOFF_FACTOR = 5.0


class MetricsPane(Vertical):
    def __init__(self, db: Database, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="pane")
        self.db = db
        self.loaded = False
        self._next_due = 0.0

    def compose(self) -> ComposeResult:
        yield Static(Text("Metrics", style="bold"), classes="pane-title")
        table = WindowTable(id="metrics-table", windowed=False)
        for label, width in COLUMNS:
            table.add_column(label, width=width, key=label)
        yield table
        with Horizontal(id="sparks"):
            with Vertical(classes="spark-box"):
                yield Static(id="finished-label", classes="spark-label")
                yield Sparkline([0] * BUCKETS, id="finished-spark")
            with Vertical(classes="spark-box"):
                yield Static(id="failures-label", classes="spark-label")
                yield Sparkline([0] * BUCKETS, id="failures-spark")
        # Until the first collect arrives (it runs in the poll's thread, never on the UI):
        # afterwards the pane shows its last figures at once whenever it is switched to.
        yield Static(Text("loading… (counting every job takes a moment on a big queue)",
                          style="dim italic"), id="latency", classes="spark-label")
        yield Static(id="retention", classes="spark-label")

    def focus_table(self) -> None:
        self.query_one(DataTable).focus()

    def plan(self) -> Callable[[], MetricsData | None]:
        db = self.db
        if time.monotonic() < self._next_due:
            return lambda: None

        def fetch() -> MetricsData:
            t0 = time.monotonic()
            done, failures = metrics.finished_series(db, buckets=BUCKETS,
                                                     bucket_seconds=BUCKET_SECONDS)
            collected = metrics.collect(db)
            return MetricsData(collected, done, failures, time.monotonic() - t0)

        return fetch

    def refresh_now(self) -> None:
        """Switching to the pane (or a test) wants fresh numbers, whatever they cost."""
        self._next_due = 0.0

    def apply(self, data: MetricsData | None) -> None:
        if data is None:
            return
        self._next_due = time.monotonic() + data.seconds * BACKOFF_FACTOR
        table = self.query_one(WindowTable)
        m = data.metrics
        rows = [("all", m.overall), *m.per_type.items()]
        keys = {str(r.value) for r in table.rows}
        changes = []
        for name, t in rows:
            s = t.by_status
            values = [cell(name, "bold" if name == "all" else ""), cell(t.total_jobs),
                      cell(s["pending"], "yellow"), cell(s["running"], "cyan"),
                      cell(s["success"], "green"), cell(s["failed"], "red"),
                      cell(s["dead"], "magenta"), cell(s["canceled"], "dim"),
                      cell(pct(t.success_rate)), cell(t.retry_count),
                      cell(ms(t.avg_execution_ms)), cell(ms(t.p50_execution_ms)),
                      cell(ms(t.p95_execution_ms)), cell(t.due_depth),
                      cell("-" if t.oldest_due_age_s is None else f"{t.oldest_due_age_s:.1f}s"),
                      cell(t.finished_last_minute)]
            if name in keys:
                changes += [(name, label, value)
                            for (label, _), value in zip(COLUMNS, values, strict=True)]
            else:
                table.add_row(*values, key=name)
        table.update_cells(changes)  # only the figures that moved are repainted
        minutes = BUCKETS * BUCKET_SECONDS / 60
        self.query_one("#finished-spark", Sparkline).data = data.finished
        self.query_one("#failures-spark", Sparkline).data = data.failures
        self.query_one("#finished-label", Static).update(Text.assemble(
            ("jobs finished", "bold green"),
            f" per {BUCKET_SECONDS:.0f}s, last {minutes:.0f} min: {sum(data.finished)} "
            f"(now {data.finished[-1]})"))
        self.query_one("#failures-label", Static).update(Text.assemble(
            ("failed attempts", "bold red"),
            f" per {BUCKET_SECONDS:.0f}s, last {minutes:.0f} min: {sum(data.failures)} "
            f"(now {data.failures[-1]})"))
        o = m.overall
        self.query_one("#latency", Static).update(Text.assemble(
            ("execution time ", "dim"), ("p50 ", "dim"), (ms(o.p50_execution_ms), "bold"),
            ("  p95 ", "dim"), (ms(o.p95_execution_ms), "bold"), ("  avg ", "dim"),
            ms(o.avg_execution_ms), ("  finished ", "dim"), str(o.finished_jobs),
            ("  dead letters ", "dim"),
            (str(o.dead_letter_depth), "bold magenta"), ("  due now ", "dim"),
            str(o.due_depth), ("  success rate ", "dim"), pct(o.success_rate)))
        self.query_one("#retention", Static).update(Text(retention_line(m), style="dim"))
        self.loaded = True
