"""`python -m bench.console`: the console over a million jobs, driven headless.

Seeds a fresh database (SQLite file and/or a new PostgreSQL database) with `--rows` jobs
in one INSERT ... SELECT per table: every status (success, failed, dead, canceled, running
with live leases, and `--pending` due jobs for the embedded worker to drain: the real
`customer` job by default, `--due-type bench_noop` for no-ops), one attempt row per ended
attempt (a running job's attempt in flight has none). Then it measures, on the same
database:

- the core reads the console is built on (core.reads.list_jobs limit 50, count_jobs with
  a cap, core.metrics.collect), median of 5;
- the console itself, in a process of its own (syncbridge_tui.app.create_app run headless
  with Textual's pilot, the embedded worker on and draining in its child process): first
  frame (create_app to the frame with the job list's rows written), refresh (request_poll
  to the poll applied on the UI), key latency (the key event reaching the app to the first
  frame written that shows its effect: see FrameClock; the old pilot.press + pause figure
  too), the RSS of the console process, of the worker child and of multiprocessing's
  resource tracker, and the worker's jobs/s meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.common import fresh_pg, fresh_sqlite, percentile

_SEED_JOBS = """
INSERT INTO sync_jobs (job_type, entity_id, status, payload, result, correlation_id,
    attempt_count, max_attempts, next_run_at, lease_owner, lease_token, lease_acquired_at,
    lease_expires_at, last_error, last_error_type, dead_error, dead_error_type, is_replay,
    created_at, updated_at, finished_at)
SELECT
    CASE WHEN i > {done} THEN '{due_type}' WHEN i % 7 = 0 THEN 'invoice' ELSE 'customer' END,
    CASE WHEN i % 7 = 0 THEN 'i_' ELSE 'c_' END || i,
    {status},
    'null'{json},
    (CASE WHEN {status} = 'success' THEN '{{"billing_id": "b"}}' ELSE 'null' END){json},
    {corr},
    CASE {status} WHEN 'dead' THEN 4 WHEN 'pending' THEN 0 ELSE 1 END, 4,
    {next_run_at},
    CASE WHEN {status} = 'running' THEN 'bench-seed:0:000000' END,
    CASE {status} WHEN 'dead' THEN 4 WHEN 'pending' THEN 0 ELSE 1 END,
    CASE WHEN {status} = 'running' THEN {base} + i * 0.01 END,
    CASE WHEN {status} = 'running' THEN {base} + 86400 * 365 END,
    CASE WHEN {status} IN ('failed', 'dead') THEN 'CRM answered 503: unavailable' END,
    CASE WHEN {status} IN ('failed', 'dead') THEN 'UpstreamTimeout' END,
    CASE WHEN {status} = 'dead' THEN 'CRM answered 503: unavailable' END,
    CASE WHEN {status} = 'dead' THEN 'UpstreamTimeout' END,
    {false},
    {base} + i * 0.01, {base} + i * 0.01 + 0.5,
    CASE WHEN {status} IN ('success', 'failed', 'dead', 'canceled')
         THEN {base} + i * 0.01 + 0.5 END
FROM (SELECT i, {status_expr} AS st FROM {series}) AS q
"""

# Status by row number: the newest --pending rows are due no-op jobs; of the rest, 2% failed,
# 1% dead, 1% canceled, 0.1% running (live leases of a worker that is not there), the rest
# succeeded.
_STATUS = ("(CASE WHEN i > {done} THEN 'pending' WHEN i % 100 < 2 THEN 'failed' "
           "WHEN i % 100 = 2 THEN 'dead' WHEN i % 100 = 3 THEN 'canceled' "
           "WHEN i % 1000 = 4 THEN '{running}' ELSE 'success' END)")

# One row per ended attempt. A running job's attempt in flight has no row (its lease
# columns describe it; the row is written when it ends), so running jobs get none.
_SEED_ATTEMPTS = """
INSERT INTO sync_job_attempts (job_id, number, worker_id, started_at, finished_at,
    duration_ms, outcome, error_type, error_message, http_status)
SELECT j.id, n.k, 'bench-seed:0:000000', j.created_at + n.k * 0.1,
    j.created_at + n.k * 0.1 + 0.05,
    50.0 + (j.id % 100),
    CASE WHEN j.status IN ('success', 'failed') THEN j.status
         WHEN j.status = 'dead' AND n.k < 4 THEN 'retry'
         WHEN j.status = 'dead' THEN 'dead'
         ELSE 'canceled' END,
    CASE WHEN j.status IN ('failed', 'dead') THEN 'UpstreamTimeout' END,
    CASE WHEN j.status IN ('failed', 'dead') THEN 'CRM answered 503: unavailable' END,
    CASE WHEN j.status IN ('failed', 'dead') THEN 503 ELSE 200 END
FROM sync_jobs j JOIN {nums} ON n.k <= j.attempt_count
WHERE j.status NOT IN ('pending', 'running')
"""


def _pair(values: Any, digits: int = 1) -> str:
    """Two figures as the tables show them: "median / p95" or "at the end / peak"."""
    return f"{values[0]:.{digits}f} / {values[1]:.{digits}f}"


def seed(db: Any, rows: int, pending: int, due_type: str = "customer", *,
         running: bool = True, pending_at: float | None = None) -> float:
    """Bulk-insert the jobs and their attempts; returns the seconds it took.

    `running=False`: the 0.1 % otherwise seeded `running` (live leases of an absent worker)
    are `success` too, so every seeded job but the pending ones is finished. `pending_at`:
    the pending jobs' next_run_at (e.g. an hour ahead: a backlog not yet due); by default
    they are due, oldest first."""
    from sqlalchemy import text

    done = rows - pending
    base = time.time() - rows * 0.01 - 60
    status_expr = _STATUS.format(done=done, running="running" if running else "success")
    next_run_at = (f"{base} + i * 0.01" if pending_at is None else
                   f"CASE WHEN st = 'pending' THEN {pending_at} ELSE {base} + i * 0.01 END")
    if db.is_postgres:
        series = f"generate_series(1, {rows}) AS s(i)"
        corr = "md5(i::text)"  # 32 hex characters, like a uuid4().hex
        false = "false"
        nums = "generate_series(1, 4) AS n(k)"
    else:
        series = (f"(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s "
                  f"WHERE i < {rows}) SELECT i FROM s)")
        corr = "lower(hex(randomblob(16)))"
        false = "0"
        nums = "(SELECT 1 AS k UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4) AS n"
    t0 = time.perf_counter()
    with db.write() as conn:
        conn.execute(text(_SEED_JOBS.format(
            done=done, due_type=due_type, status="st", status_expr=status_expr, base=base,
            next_run_at=next_run_at,
            series=series, corr=corr, false=false, json="::json" if db.is_postgres else "")))
        conn.execute(text(_SEED_ATTEMPTS.format(nums=nums)))
    with db.write() as conn:
        conn.execute(text("ANALYZE"))
    return time.perf_counter() - t0


def timed(fn: Callable[[], Any], times: int = 5) -> float:
    samples = []
    for _ in range(times):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1000


def core_reads(db: Any) -> dict[str, float]:
    from core import metrics, reads

    dead = reads.JobFilter(statuses=("dead",))
    return {
        "list_jobs(limit=50)": timed(lambda: reads.list_jobs(db, limit=50)),
        "list_jobs(dead, limit=50)": timed(lambda: reads.list_jobs(db, dead, limit=50)),
        "list_jobs(search='c_5000', limit=50)": timed(
            lambda: reads.list_jobs(db, reads.JobFilter(search="c_5000"), limit=50)),
        "count_jobs(cap=10000)": timed(lambda: reads.count_jobs(db, cap=10_000)),
        "count_jobs(dead, cap=10000)": timed(lambda: reads.count_jobs(db, dead, cap=10_000)),
        "metrics.collect()": timed(lambda: metrics.collect(db), times=3),
    }


def proc_rss_mb(pid: int | str = "self") -> tuple[float, float]:
    """(current, peak) resident set size of a process, MB (VmRSS / VmHWM)."""
    out = {"VmRSS:": 0.0, "VmHWM:": 0.0}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(" ", 1)[0].split("\t", 1)[0]
            if key in out:
                out[key] = int(line.split()[1]) / 1024
    return out["VmRSS:"], out["VmHWM:"]


def child_pids(parent: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                pids.append(int(stat.parent.name))
    return pids


class FrameClock:
    """When a key reaches the app, and when the first frame showing its effect is written.

    Under `run_test` Textual's headless driver renders nothing (App._display returns early
    when headless), so the driver is told it is not headless: every update is rendered to
    terminal output as on a real terminal and handed to the driver's `write` (a no-op).
    A key's latency is from App.on_event receiving the Key event to the end of the first
    App._display after it at which the key's effect holds (cursor moved, pane switched):
    the screen update that carries it, written out. Not counted: the pilot's own posting
    and idle-waiting, which a user's terminal does not have. While a measurement waits,
    the harness only sleeps (asyncio.sleep): `pilot.pause` would post a callback to every
    widget and force a screen update every millisecond, competing with the work measured.
    """

    def __init__(self, app: Any) -> None:
        from textual import events

        self.frames = 0
        self.key_at: float | None = None
        self.effect: Callable[[], bool] | None = None
        self.shown_at: float | None = None
        driver = app._driver

        class DrawnHeadless(type(driver)):  # type: ignore[misc]
            @property
            def is_headless(self) -> bool:
                return False

        driver.__class__ = DrawnHeadless
        original_event, original_display = app.on_event, app._display

        async def on_event(event: Any) -> None:
            if isinstance(event, events.Key) and self.effect is not None and self.key_at is None:
                self.key_at = time.perf_counter()
            await original_event(event)

        def display(screen: Any, renderable: Any) -> None:
            original_display(screen, renderable)
            if renderable is None:
                return
            self.frames += 1
            if (self.key_at is not None and self.shown_at is None and self.effect is not None
                    and self.effect()):
                self.shown_at = time.perf_counter()

        app.on_event = on_event
        app._display = display

    def arm(self, effect: Callable[[], bool]) -> None:
        self.key_at, self.shown_at, self.effect = None, None, effect

    def latency_ms(self) -> float | None:
        if self.key_at is None or self.shown_at is None:
            return None
        return (self.shown_at - self.key_at) * 1000


async def drive_console(url: str, concurrency: int, worker: bool = True) -> dict[str, Any]:
    import os

    from bench import jobs as bench_jobs
    from core.config import load_settings
    from core.demo import registry as builtin
    from syncbridge_tui.app import ConsoleOptions, create_app

    registry = builtin.copy()
    registry.register(bench_jobs.NOOP, bench_jobs.noop)
    settings = load_settings(database_url=url, concurrency=concurrency, demo=True)
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    app = create_app(settings, ConsoleOptions(keymap={}, concurrency=concurrency,
                                              embedded_worker=worker,
                                              worker_kwargs={"registry": registry}))
    async with app.run_test(size=(140, 40)) as pilot:
        clock = FrameClock(app)
        main = None
        while True:
            main = app.main_screen()
            jl = main.job_list() if main is not None else None
            if jl is not None and jl.loaded and jl.jobs:
                break
            if time.perf_counter() - t0 > 60:
                raise TimeoutError("the console showed no jobs within 60 s")
            await pilot.pause(0.005)
        frames = clock.frames
        while clock.frames == frames and time.perf_counter() - t0 < 60:
            await pilot.pause(0.001)  # the frame with the rows, written
        out["first_frame_ms"] = (time.perf_counter() - t0) * 1000
        engine = app.engine
        while engine is not None and engine.state != "running":  # the child is claiming
            if time.perf_counter() - t0 > 60 or engine.done.is_set():
                raise RuntimeError(f"the embedded worker did not start: {engine.error}")
            await pilot.pause(0.01)
        out["worker_ready_ms"] = (time.perf_counter() - t0) * 1000
        await pilot.pause(1.0)  # the worker at full speed before anything is measured
        w_start = time.perf_counter()
        processed0 = engine.processed if engine else 0

        refresh = []
        for _ in range(20):
            seen = app.poll_count
            t = time.perf_counter()
            app.request_poll()
            while app.poll_count <= seen or app._polling:
                await asyncio.sleep(0.001)  # not pilot.pause: see FrameClock
            refresh.append((time.perf_counter() - t) * 1000)
            await pilot.pause(0.05)
        out["refresh_ms"] = (statistics.median(refresh), percentile(refresh, 0.95))

        frame_keys: dict[str, list[float]] = {}
        pilot_keys: dict[str, list[float]] = {}
        table = jl.table

        async def measure(label: str, key: str, effect: Callable[[], bool]) -> None:
            clock.arm(effect)
            t = time.perf_counter()
            await pilot.press(key)
            deadline = time.perf_counter() + 30
            while clock.latency_ms() is None:
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"key {key!r}: no frame showed its effect in 30 s")
                await asyncio.sleep(0.001)  # not pilot.pause: see FrameClock
            await pilot.pause()
            pilot_keys.setdefault(label, []).append((time.perf_counter() - t) * 1000)
            frame_keys.setdefault(label, []).append(clock.latency_ms() or 0.0)
            clock.arm(lambda: False)
            await pilot.pause(0.05)  # keys a person types, not a key-repeat burst

        for key in ["j"] * 10 + ["k"] * 10 + ["G", "g"] * 3:
            before = table.cursor_row
            if key == "j":
                await measure(key, key, lambda b=before: table.cursor_row == b + 1)
            elif key == "k":
                await measure(key, key, lambda b=before: table.cursor_row == b - 1)
            elif key == "G":
                await measure(key, key, lambda b=before: table.cursor_row > b)
            else:
                await measure(key, key, lambda: table.cursor_row == 0)
        panes = {"1": "jobs", "2": "dead", "3": "metrics", "4": "workers", "5": "log"}
        for key in ("2", "1", "3", "1", "4", "1", "5", "1") * 2:
            await measure("pane " + key, key, lambda p=panes[key]: main.pane == p)
        out["keys_ms"] = {k: (statistics.median(v), max(v)) for k, v in frame_keys.items()}
        every = [x for v in frame_keys.values() for x in v]
        out["key_ms"] = (statistics.median(every), percentile(every, 0.95))
        pilot_every = [x for v in pilot_keys.values() for x in v]
        out["pilot_key_ms"] = (statistics.median(pilot_every), percentile(pilot_every, 0.95))
        elapsed = time.perf_counter() - w_start
        processed = (engine.processed if engine else 0) - processed0
        out["worker_jobs_per_s"] = processed / elapsed if elapsed else 0.0
        from core import reads

        # Still due when the measurements ended: > 0 means the worker drained throughout.
        out["due_left"] = reads.count_jobs(app.db, reads.JobFilter(statuses=("pending",)))
        out["rss_mb"] = proc_rss_mb()
        pid = engine.pid if engine else None
        out["child_rss_mb"] = proc_rss_mb(pid) if pid else (0.0, 0.0)
        others = [p for p in child_pids(os.getpid()) if p != pid]
        out["helper_rss_mb"] = sum(proc_rss_mb(p)[0] for p in others)
        await pilot.press("q")
        while engine is not None and not engine.done.is_set():
            await pilot.pause(0.05)
    app.db.dispose()
    return out


async def pilot_floor() -> float:
    """The same press-and-pause measurement on a bare Textual DataTable: what the harness
    itself costs (pilot.press waits for idle and for the animator; pause for a refresh)."""
    from textual.app import App, ComposeResult
    from textual.widgets import DataTable

    class Bare(App[None]):
        def compose(self) -> ComposeResult:
            yield DataTable()

        def on_mount(self) -> None:
            table = self.query_one(DataTable)
            table.add_columns("id", "text")
            for i in range(40):
                table.add_row(str(i), "x" * 60)
            table.focus()

    samples = []
    async with Bare().run_test(size=(140, 40)) as pilot:
        await pilot.pause()
        for key in ["j", "down"] * 10:
            t = time.perf_counter()
            await pilot.press(key)
            await pilot.pause()
            samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


@contextlib.contextmanager
def database(backend: str, tmp: Path) -> Iterator[str]:
    if backend == "pg":
        with fresh_pg("console") as dsn:
            yield dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    else:
        with fresh_sqlite(tmp, "console") as path:
            yield f"sqlite:///{path}"


def run(backend: str, rows: int, pending: int, concurrency: int, tmp: Path,
        skip_console: bool, due_type: str = "customer") -> dict[str, Any]:
    from core.db import Database
    from core.migrations import upgrade

    with database(backend, tmp) as url:
        db = Database(url)
        upgrade(db)
        result: dict[str, Any] = {"seed_s": seed(db, rows, pending, due_type)}
        print(f"  seeded {rows:,} jobs in {result['seed_s']:.1f} s", file=sys.stderr)
        result["reads_ms"] = core_reads(db)
        db.dispose()
        if not skip_console:
            try:
                import syncbridge_tui.app  # noqa: F401
            except ImportError as exc:
                result["console"] = f"syncbridge_tui.app not importable: {exc}"
            else:
                result["console"] = drive_in_child(url, concurrency)
                # The same console and keys with no worker: what the UI costs by itself.
                result["console_alone"] = drive_in_child(url, concurrency, worker=False)
        return result


def drive_in_child(url: str, concurrency: int, worker: bool = True) -> dict[str, Any]:
    """The console runs in a process of its own, as it would for a user: the seed and the
    core reads above leave memory behind in this one, which its RSS must not include."""
    import json
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-m", "bench.console", "--drive", url,
         "--concurrency", str(concurrency), *([] if worker else ["--no-worker"])],
        stdout=subprocess.PIPE, text=True, check=False, timeout=600)
    if proc.returncode != 0:
        return {"error": f"the console run failed (exit {proc.returncode})"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def render(results: dict[str, dict[str, Any]], rows: int, pending: int) -> str:
    names = {"sqlite": "SQLite", "pg": "PostgreSQL"}
    cols = [c for c in results if not c.startswith("_")]
    out = [f"{rows:,} jobs ({pending:,} of them due `{results['_due_type']}` jobs the embedded "
           "worker drains while the console is measured); 140x40 headless terminal.", ""]
    out.append("| | " + " | ".join(names[c] for c in cols) + " | issue 5 target |")
    out.append("|---|" + "--:|" * len(cols) + "---|")

    def row(label: str, values: list[str], target: str = "") -> None:
        out.append(f"| {label} | " + " | ".join(values) + f" | {target} |")

    row("seed (bulk insert, s)", [f"{results[c]['seed_s']:.1f}" for c in cols])
    consoles = [results[c].get("console") for c in cols]
    if all(isinstance(x, dict) and "error" not in x for x in consoles):
        row("first frame (ms)", [f"{x['first_frame_ms']:.0f}" for x in consoles], "<= 1500")
        row("  embedded worker claiming (ms after create_app)",
            [f"{x['worker_ready_ms']:.0f}" for x in consoles])
        row("refresh, median / p95 (ms)",
            [_pair(x['refresh_ms']) for x in consoles], "<= 50")
        row("key to the frame showing it, median / p95 (ms)",
            [_pair(x['key_ms']) for x in consoles], "<= 50")
        for key in consoles[0]["keys_ms"]:
            row(f"  key `{key}`, median / max (ms)",
                [_pair(x['keys_ms'][key]) for x in consoles])
        row("pilot.press + pause (old harness figure), median / p95 (ms)",
            [_pair(x['pilot_key_ms']) for x in consoles])
        row("  the same on a bare Textual DataTable: the pilot's own cost (ms)",
            [f"{results['_floor']:.1f}" for _ in consoles])
        alone = [results[c].get("console_alone") for c in cols]
        if all(isinstance(x, dict) and "error" not in x for x in alone):
            row("the same console with no worker: first frame (ms)",
                [f"{x['first_frame_ms']:.0f}" for x in alone])
            row("  refresh, median / p95 (ms)",
                [_pair(x['refresh_ms']) for x in alone])
            row("  key to the frame showing it, median / p95 (ms)",
                [_pair(x['key_ms']) for x in alone])
            for key in ("pane 2", "pane 1", "G"):
                row(f"  key `{key}`, median / max (ms)",
                    [_pair(x['keys_ms'][key]) for x in alone])
            row("  RSS console process, at the end / peak (MB)",
                [_pair(x['rss_mb'], 0) for x in alone])
        row("RSS console process, at the end / peak (MB)",
            [_pair(x['rss_mb'], 0) for x in consoles], "< 150")
        row("RSS worker child, at the end / peak (MB)",
            [_pair(x['child_rss_mb'], 0) for x in consoles])
        row("RSS multiprocessing's resource tracker (MB)",
            [f"{x['helper_rss_mb']:.0f}" for x in consoles])
        row("embedded worker meanwhile (jobs/s)",
            [f"{x['worker_jobs_per_s']:,.0f}" for x in consoles])
        row("  due jobs still pending when the measurements ended",
            [f"{x['due_left']:,}" for x in consoles])
    else:
        out.append("")
        out.append("Console not measured: " + "; ".join(str(x) for x in consoles))
    for q in results[cols[0]]["reads_ms"]:
        row(f"core `{q}` (ms)", [f"{results[c]['reads_ms'][q]:.1f}" for c in cols])
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.console",
                                description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--pending", type=int, default=150_000,
                   help="due jobs among the rows, for the embedded worker")
    p.add_argument("--due-type", default="customer", choices=("customer", "bench_noop"),
                   help="the due jobs' type: the real customer job (CRM + Billing through "
                        "the in-process mock, ~2,500 jobs/s) or a no-op (~13,000 jobs/s, "
                        "drained before the measurements end)")
    p.add_argument("--backends", default="sqlite,pg")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--no-console", action="store_true", help="only the core reads")
    p.add_argument("--drive", metavar="URL", help=argparse.SUPPRESS)  # one console run
    p.add_argument("--no-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    from core.logging import configure

    configure(level="warning", quiet=True)
    if args.drive:
        import json

        print(json.dumps(asyncio.run(drive_console(args.drive, args.concurrency,
                                                   worker=not args.no_worker))))
        return 0
    results: dict[str, Any] = {"_due_type": args.due_type}
    if not args.no_console:
        results["_floor"] = asyncio.run(pilot_floor())
    with tempfile.TemporaryDirectory(prefix="syncbridge-console-") as tmp:
        for backend in [b for b in args.backends.split(",") if b]:
            print(f"{backend}:", file=sys.stderr)
            results[backend] = run(backend, args.rows, min(args.pending, args.rows),
                                   args.concurrency, Path(tmp), args.no_console,
                                   args.due_type)
    print(render(results, args.rows, min(args.pending, args.rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
