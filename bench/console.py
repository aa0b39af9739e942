"""`python -m bench.console`: the console over a million jobs, driven headless.

Seeds a fresh database (SQLite file and/or a new PostgreSQL database) with `--rows` jobs
in one INSERT ... SELECT per table: every status (success, failed, dead, canceled, running
with live leases, and `--pending` due no-op jobs for the embedded worker to drain), one
attempt row per attempt. Then it measures, on the same database:

- the core reads the console is built on (core.queue.list_jobs limit 50, count_jobs with
  a cap, core.metrics.collect), median of 5;
- the console itself (syncbridge_tui.app.create_app, run headless with Textual's pilot,
  embedded worker on and draining): first frame (create_app to the job list showing rows),
  refresh cost (request_poll to the poll applied), key latency (press to the screen
  updated, for j/k/G/g and pane switches), and the process RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
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
    CASE WHEN i > {done} THEN 'bench_noop' WHEN i % 7 = 0 THEN 'invoice' ELSE 'customer' END,
    CASE WHEN i % 7 = 0 THEN 'i_' ELSE 'c_' END || i,
    {status},
    'null'{json},
    (CASE WHEN {status} = 'success' THEN '{{"billing_id": "b"}}' ELSE 'null' END){json},
    {corr},
    CASE {status} WHEN 'dead' THEN 4 WHEN 'pending' THEN 0 ELSE 1 END, 4,
    {base} + i * 0.01,
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
           "WHEN i % 1000 = 4 THEN 'running' ELSE 'success' END)")

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


def seed(db: Any, rows: int, pending: int) -> float:
    """Bulk-insert the jobs and their attempts; returns the seconds it took."""
    from sqlalchemy import text

    done = rows - pending
    base = time.time() - rows * 0.01 - 60
    status_expr = _STATUS.format(done=done)
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
            done=done, status="st", status_expr=status_expr, base=base, series=series,
            corr=corr, false=false, json="::json" if db.is_postgres else "")))
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
    from core import metrics, queue

    dead = queue.JobFilter(statuses=("dead",))
    return {
        "list_jobs(limit=50)": timed(lambda: queue.list_jobs(db, limit=50)),
        "list_jobs(dead, limit=50)": timed(lambda: queue.list_jobs(db, dead, limit=50)),
        "list_jobs(search='c_5000', limit=50)": timed(
            lambda: queue.list_jobs(db, queue.JobFilter(search="c_5000"), limit=50)),
        "count_jobs(cap=10000)": timed(lambda: queue.count_jobs(db, cap=10_000)),
        "count_jobs(dead, cap=10000)": timed(lambda: queue.count_jobs(db, dead, cap=10_000)),
        "metrics.collect()": timed(lambda: metrics.collect(db), times=3),
    }


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process, MB."""
    current = 0.0
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                current = int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return current, peak


async def drive_console(url: str, concurrency: int) -> dict[str, Any]:
    from bench import jobs as bench_jobs
    from core.config import load_settings
    from core.handlers import registry as builtin
    from syncbridge_tui.app import ConsoleOptions, create_app

    registry = builtin.copy()
    registry.register(bench_jobs.NOOP, bench_jobs.noop)
    settings = load_settings(database_url=url, concurrency=concurrency)
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    app = create_app(settings, ConsoleOptions(keymap={}, concurrency=concurrency,
                                              worker_kwargs={"registry": registry}))
    async with app.run_test(size=(140, 40)) as pilot:
        main = None
        while True:
            main = app.main_screen()
            jl = main.job_list() if main is not None else None
            if jl is not None and jl.loaded and jl.jobs:
                break
            if time.perf_counter() - t0 > 60:
                raise TimeoutError("the console showed no jobs within 60 s")
            await pilot.pause(0.005)
        await pilot.pause()
        out["first_frame_ms"] = (time.perf_counter() - t0) * 1000
        engine = app.engine
        w_start = time.perf_counter()
        processed0 = engine.processed if engine else 0

        refresh = []
        for _ in range(20):
            seen = app.poll_count
            t = time.perf_counter()
            app.request_poll()
            while app.poll_count <= seen or app._polling:
                await pilot.pause(0.001)
            await pilot.pause()
            refresh.append((time.perf_counter() - t) * 1000)
        out["refresh_ms"] = (statistics.median(refresh), percentile(refresh, 0.95))

        keys: dict[str, list[float]] = {}
        table = jl.table
        for key in ["j"] * 10 + ["k"] * 10 + ["G", "g"] * 3:
            before = table.cursor_row
            t = time.perf_counter()
            await pilot.press(key)
            await pilot.pause()
            keys.setdefault(key, []).append((time.perf_counter() - t) * 1000)
            if key in "jk" and table.cursor_row == before and key == "j":
                raise RuntimeError("the cursor did not move")
        for key in ("2", "1", "3", "1", "4", "1"):  # dead letters, metrics, workers panes
            t = time.perf_counter()
            await pilot.press(key)
            await pilot.pause()
            keys.setdefault("pane " + key, []).append((time.perf_counter() - t) * 1000)
        out["keys_ms"] = {k: (statistics.median(v), max(v)) for k, v in keys.items()}
        all_keys = [x for v in keys.values() for x in v]
        out["key_ms"] = (statistics.median(all_keys), percentile(all_keys, 0.95))
        elapsed = time.perf_counter() - w_start
        processed = (engine.processed if engine else 0) - processed0
        out["worker_jobs_per_s"] = processed / elapsed if elapsed else 0.0
        out["rss_mb"] = rss_mb()
        await pilot.press("q")
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
        skip_console: bool) -> dict[str, Any]:
    from core.db import Database
    from core.migrations import upgrade

    with database(backend, tmp) as url:
        db = Database(url)
        upgrade(db)
        result: dict[str, Any] = {"seed_s": seed(db, rows, pending)}
        print(f"  seeded {rows:,} jobs in {result['seed_s']:.1f} s", file=sys.stderr)
        result["reads_ms"] = core_reads(db)
        db.dispose()
        if not skip_console:
            try:
                import syncbridge_tui.app  # noqa: F401
            except ImportError as exc:
                result["console"] = f"syncbridge_tui.app not importable: {exc}"
            else:
                result["console"] = asyncio.run(drive_console(url, concurrency))
        return result


def render(results: dict[str, dict[str, Any]], rows: int, pending: int) -> str:
    names = {"sqlite": "SQLite", "pg": "PostgreSQL"}
    cols = [c for c in results if not c.startswith("_")]
    out = [f"{rows:,} jobs ({pending:,} of them due no-op jobs the embedded worker drains "
           "while the console is measured); 140x40 headless terminal.", ""]
    out.append("| | " + " | ".join(names[c] for c in cols) + " | issue 5 target |")
    out.append("|---|" + "--:|" * len(cols) + "---|")

    def row(label: str, values: list[str], target: str = "") -> None:
        out.append(f"| {label} | " + " | ".join(values) + f" | {target} |")

    row("seed (bulk insert, s)", [f"{results[c]['seed_s']:.1f}" for c in cols])
    consoles = [results[c].get("console") for c in cols]
    if all(isinstance(x, dict) for x in consoles):
        row("first frame (ms)", [f"{x['first_frame_ms']:.0f}" for x in consoles], "<= 1500")
        row("refresh, median / p95 (ms)",
            [f"{x['refresh_ms'][0]:.1f} / {x['refresh_ms'][1]:.1f}" for x in consoles], "<= 50")
        row("key press to screen, median / p95 (ms)",
            [f"{x['key_ms'][0]:.1f} / {x['key_ms'][1]:.1f}" for x in consoles], "<= 50")
        row("  the same on a bare Textual DataTable: the pilot's own cost (ms)",
            [f"{results['_floor']:.1f}" for _ in consoles])
        for key in consoles[0]["keys_ms"]:
            row(f"  key `{key}`, median / max (ms)",
                [f"{x['keys_ms'][key][0]:.1f} / {x['keys_ms'][key][1]:.1f}" for x in consoles])
        row("RSS at the end / peak (MB)",
            [f"{x['rss_mb'][0]:.0f} / {x['rss_mb'][1]:.0f}" for x in consoles], "< 150")
        row("embedded worker meanwhile (jobs/s)",
            [f"{x['worker_jobs_per_s']:,.0f}" for x in consoles])
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
    p.add_argument("--pending", type=int, default=50_000,
                   help="due no-op jobs among the rows, for the embedded worker")
    p.add_argument("--backends", default="sqlite,pg")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--no-console", action="store_true", help="only the core reads")
    args = p.parse_args(argv)
    from core.logging import configure

    configure(level="warning", quiet=True)
    results: dict[str, Any] = {}
    if not args.no_console:
        results["_floor"] = asyncio.run(pilot_floor())
    with tempfile.TemporaryDirectory(prefix="syncbridge-console-") as tmp:
        for backend in [b for b in args.backends.split(",") if b]:
            print(f"{backend}:", file=sys.stderr)
            results[backend] = run(backend, args.rows, min(args.pending, args.rows),
                                   args.concurrency, Path(tmp), args.no_console)
    print(render(results, args.rows, min(args.pending, args.rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
