"""`python -m bench`: SyncBridge and its peers through the same workloads, side by side.

Every measurement gets a fresh database (PostgreSQL: a new `bench_*` database, dropped
after; SQLite: a new file, deleted after). Workers are separate processes, started and
warmed up before the clock starts. The clock stops when the system's own tables say the
work is done, and every run is then verified from those tables.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench.common import (
    Skip,
    Workers,
    comma_list,
    fresh_pg,
    fresh_sqlite,
    median,
    percentile,
    wait_until,
)

NOOP, FAIL_ONCE, PROBE = "bench_noop", "bench_fail_once", "bench_probe"
WORKLOADS = ("drain", "fail_once", "enqueue", "latency", "customer")
# The drain workloads: N -> (jobs, job type, attempts per job).
DRAINS = {"drain": lambda n: (n, NOOP, 1), "fail_once": lambda n: (max(1, n // 10), FAIL_ONCE, 2)}


@dataclass
class System:
    key: str
    label: str
    module: str
    backend: str  # "pg" | "sqlite"
    config: str
    procs: int
    cfg: dict[str, Any]
    workloads: tuple[str, ...] = ("drain", "fail_once", "enqueue", "latency")
    version: str = ""
    skip: str | None = None
    # Alternatives tried by --sweep: (configuration, processes, worker settings).
    sweep: tuple[tuple[str, int, dict[str, Any]], ...] = ()


def systems() -> list[System]:
    # The first alternative is the default: the fastest of the recorded --sweep run.
    sb_pg = (("2 processes x concurrency 256, LISTEN/NOTIFY", 2,
              {"concurrency": 256, "poll": 0.5}),
             ("2 processes x concurrency 512, LISTEN/NOTIFY", 2,
              {"concurrency": 512, "poll": 0.5}),
             ("3 processes x concurrency 256, LISTEN/NOTIFY", 3,
              {"concurrency": 256, "poll": 0.5}),
             ("1 process x concurrency 512, LISTEN/NOTIFY", 1,
              {"concurrency": 512, "poll": 0.5}))
    sb_lite = (("2 processes x concurrency 256, poll 0.05 s", 2,
                {"concurrency": 256, "poll": 0.05}),
               ("1 process x concurrency 512, poll 0.05 s", 1,
                {"concurrency": 512, "poll": 0.05}),
               ("1 process x concurrency 256, poll 0.05 s", 1,
                {"concurrency": 256, "poll": 0.05}))
    pgq = (("asyncpg, 2 processes, batch 200", 2, {"batch": 200, "poll": 1.0}),
           ("asyncpg, 1 process, batch 200", 1, {"batch": 200, "poll": 1.0}),
           ("asyncpg, 2 processes, batch 500", 2, {"batch": 500, "poll": 1.0}),
           ("asyncpg, 4 processes, batch 100", 4, {"batch": 100, "poll": 1.0}))
    proc = (("8 processes x concurrency 2, poll 0.1 s", 8, {"concurrency": 2, "poll": 0.1}),
            ("4 processes x concurrency 4, poll 0.1 s", 4, {"concurrency": 4, "poll": 0.1}),
            ("2 processes x concurrency 10, poll 0.1 s", 2, {"concurrency": 10, "poll": 0.1}))
    huey = (("1 consumer x 16 threads, poll 0.05 s", 1, {"workers": 16, "poll": 0.05}),
            ("1 consumer x 4 threads, poll 0.05 s", 1, {"workers": 4, "poll": 0.05}),
            ("1 consumer x 1 thread, poll 0.05 s", 1, {"workers": 1, "poll": 0.05}))
    return [
        System("sb_pg", "SyncBridge", "bench.sb", "pg", *sb_pg[0],
               ("drain", "fail_once", "enqueue", "latency", "customer"), sweep=sb_pg),
        System("sb_sqlite", "SyncBridge", "bench.sb", "sqlite", *sb_lite[0],
               ("drain", "fail_once", "enqueue", "latency", "customer"), sweep=sb_lite),
        System("pgqueuer", "pgqueuer", "bench.peer_pgqueuer", "pg", *pgq[0], sweep=pgq),
        System("procrastinate", "procrastinate", "bench.peer_procrastinate", "pg", *proc[0],
               sweep=proc),
        System("huey", "huey SqliteHuey", "bench.peer_huey", "sqlite", *huey[0], sweep=huey),
        System("bare_pg", "bare psycopg loop", "bench.peer_bare", "pg",
               "1 process, SKIP LOCKED, 100 per claim", 1, {}, ("drain",)),
        System("bare_sqlite", "bare sqlite3 loop", "bench.peer_bare", "sqlite",
               "1 process, WAL, 100 per claim", 1, {}, ("drain",)),
    ]


def sweep(system: System, n: int, tmp: Path, log: Any) -> None:
    """Try each alternative configuration on the drain once; keep the fastest."""
    best: tuple[float, tuple[str, int, dict[str, Any]]] | None = None
    mod = importlib.import_module(system.module)
    for alt in system.sweep:
        system.config, system.procs, system.cfg = alt
        try:
            with fresh(system, tmp) as target:
                rate = run_drain(system, mod, target, n, NOOP, 1)
        except Exception as exc:
            log(f"  sweep {system.key} [{alt[0]}]: {exc}")
            continue
        log(f"  sweep {system.key} [{alt[0]}]: {rate:,.0f} jobs/s")
        if best is None or rate > best[0]:
            best = (rate, alt)
    if best is not None:
        system.config, system.procs, system.cfg = best[1]


@dataclass
class Sample:
    values: list[float] = field(default_factory=list)
    p95: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@contextlib.contextmanager
def fresh(system: System, tmp: Path) -> Iterator[str]:
    if system.backend == "pg":
        with fresh_pg(system.key) as dsn:
            yield dsn
    else:
        with fresh_sqlite(tmp, system.key) as path:
            yield str(path)


def _worker_cfgs(system: System, target: str, **extra: Any) -> list[dict[str, Any]]:
    return [dict(system.cfg, target=target, **extra) for _ in range(system.procs)]


class DrainObserver(Protocol):
    """Hooks around a drain's timed window (bench/pgprofile.py samples the server there)."""

    def before_workers(self, target: str) -> None: ...   # done probe open, no worker yet
    def before_go(self, worker_pids: list[int]) -> None: ...   # workers ready
    def at_done(self) -> None: ...   # the tables say done; workers still connected
    def after_stop(self) -> None: ...   # workers exited


def run_drain(system: System, mod: Any, target: str, n: int, job_type: str,
              attempts: int, observer: DrainObserver | None = None, **extra: Any) -> float:
    mod.prepare(target)
    prefix = "c_9" if job_type == "customer" else "e"
    mod.enqueue(target, job_type, n, prefix=prefix)
    done, close = mod.done_probe(target, n)
    try:
        procs = 1 if job_type == "customer" else system.procs
        cfgs = _worker_cfgs(system, target, **extra)[:procs]
        if observer:
            observer.before_workers(target)
        with Workers(f"{system.module}:worker", cfgs) as w:
            if observer:
                observer.before_go([p.pid for p in w.procs])
            t0 = w.go()
            t1 = wait_until(done, timeout=max(120.0, n / 50))
            if observer:
                observer.at_done()
            w.stop()
        if observer:
            observer.after_stop()
    finally:
        close()
    problem = mod.verify(target, job_type, n, attempts)
    if problem:
        raise RuntimeError(f"verification failed: {problem}")
    return n / (t1 - t0)


def run_enqueue(system: System, mod: Any, target: str, n: int) -> float:
    mod.prepare(target)
    return n / mod.enqueue(target, NOOP, n)


def run_latency(system: System, mod: Any, target: str, samples: int) -> tuple[float, float]:
    mod.prepare(target)
    done, close = mod.done_probe(target, samples)
    cfgs = _worker_cfgs(system, target)[:1]
    try:
        with Workers(f"{system.module}:worker", cfgs) as w:
            w.go()
            time.sleep(0.5)  # the worker is idle: waiting on its wake-up or its poll
            one = mod.enqueue_probe(target)
            for i in range(samples):
                one(i)
                time.sleep(0.02)
            wait_until(done, timeout=60)
            time.sleep(0.2)
            results = w.stop()
            getattr(one, "close", lambda: None)()
    finally:
        close()
    lat = [x for r in results for x in r.get("latencies", [])]
    if len(lat) != samples:
        raise RuntimeError(f"{len(lat)}/{samples} probes reached a handler")
    return percentile(lat, 0.5) * 1000, percentile(lat, 0.95) * 1000


def measure(system: System, workload: str, n: int, tmp: Path, results: dict[str, Sample],
            log: Any) -> None:
    mod = importlib.import_module(system.module)
    key = f"{system.key}:{workload}"
    sample = results.setdefault(key, Sample())
    try:
        with fresh(system, tmp) as target:
            if workload in DRAINS:
                sample.values.append(run_drain(system, mod, target, *DRAINS[workload](n)))
            elif workload == "customer":
                sample.values.append(run_drain(system, mod, target, max(1, n // 2),
                                               "customer", 1, customer=True))
            elif workload == "enqueue":
                sample.values.append(run_enqueue(system, mod, target, n))
            elif workload == "latency":
                p50, p95 = run_latency(system, mod, target, 50 if n < 5000 else 200)
                sample.values.append(p50)
                sample.p95.append(p95)
    except Exception as exc:  # one failing peer must not sink the table
        sample.errors.append(f"{type(exc).__name__}: {exc}")
        log(f"  ! {key}: {exc}")
        return
    last = sample.values[-1]
    extra = f" / p95 {sample.p95[-1]:.1f} ms" if workload == "latency" else ""
    unit = " ms" if workload == "latency" else " jobs/s"
    log(f"  {key}: {last:,.1f}{unit}{extra}")


def fmt_rate(s: Sample | None) -> str:
    if s is None:
        return "-"
    if not s.values:
        return "error" if s.errors else "-"
    return f"{median(s.values):,.0f}"


def fmt_latency(s: Sample | None) -> str:
    if s is None or not s.values:
        return "error" if s and s.errors else "-"
    return f"{median(s.values):.1f} / {median(s.p95):.1f}"


def ratio(results: dict[str, Sample], a: str, b: str) -> float | None:
    sa, sb = results.get(a), results.get(b)
    if not sa or not sb or not sa.values or not sb.values:
        return None
    return median(sa.values) / median(sb.values)


def run_ratios(results: dict[str, Sample], a: str, b: str) -> list[float]:
    """The ratio within each run (the two measured minutes apart), when no run failed: how
    far the machine's noise moves the headline ratio."""
    sa, sb = results.get(a), results.get(b)
    if not sa or not sb or sa.errors or sb.errors or len(sa.values) != len(sb.values):
        return []
    return [x / y for x, y in zip(sa.values, sb.values, strict=True) if y]


def render(chosen: list[System], results: dict[str, Sample], args: argparse.Namespace,
           elapsed: float) -> str:
    out = []
    out.append(f"N = {args.n:,} no-op jobs, {args.n // 10:,} fail-once jobs, "
               f"{args.repeat} runs each (median); {platform.python_implementation()} "
               f"{platform.python_version()}; {elapsed:.0f} s in all.\n")
    out.append("| system | db | configuration | drain jobs/s | fail-once jobs/s "
               "| bulk enqueue jobs/s | latency p50 / p95 ms |")
    out.append("|---|---|---|--:|--:|--:|--:|")
    for s in chosen:
        db = "PostgreSQL" if s.backend == "pg" else "SQLite"
        label = f"{s.label} {s.version}".strip()
        if s.skip:
            out.append(f"| {label} | {db} | skipped: {s.skip} | - | - | - | - |")
            continue
        r = {w: results.get(f"{s.key}:{w}") for w in WORKLOADS}
        out.append(f"| {label} | {db} | {s.config} | {fmt_rate(r['drain'])} "
                   f"| {fmt_rate(r['fail_once'])} | {fmt_rate(r['enqueue'])} "
                   f"| {fmt_latency(r['latency'])} |")
    cust = [s for s in chosen if f"{s.key}:customer" in results]
    if cust:
        out.append("")
        out.append("Real work (the built-in `customer` job: CRM fetch + Billing push through "
                   "the in-process mock, one worker process): "
                   + "; ".join(f"{'PostgreSQL' if s.backend == 'pg' else 'SQLite'} "
                               f"{fmt_rate(results[f'{s.key}:customer'])} jobs/s"
                               for s in cust) + ".")
    targets = [
        ("PostgreSQL drain vs pgqueuer", "sb_pg:drain", "pgqueuer:drain", 1.5),
        ("PostgreSQL drain vs procrastinate", "sb_pg:drain", "procrastinate:drain", 25.0),
        ("PostgreSQL fail-once vs pgqueuer", "sb_pg:fail_once", "pgqueuer:fail_once", 3.0),
        ("PostgreSQL fail-once vs procrastinate", "sb_pg:fail_once",
         "procrastinate:fail_once", None),
        ("SQLite drain vs huey", "sb_sqlite:drain", "huey:drain", 8.0),
        ("SQLite fail-once vs huey", "sb_sqlite:fail_once", "huey:fail_once", None),
        ("PostgreSQL bulk enqueue vs pgqueuer", "sb_pg:enqueue", "pgqueuer:enqueue", 1.0),
        ("PostgreSQL drain vs bare psycopg loop", "sb_pg:drain", "bare_pg:drain", None),
        ("SQLite drain vs bare sqlite3 loop", "sb_sqlite:drain", "bare_sqlite:drain", None),
    ]
    rows = []
    for label, a, b, goal in targets:
        r = ratio(results, a, b)
        if r is None:
            continue
        verdict = "" if goal is None else (
            f"at least {goal:g}x: " + ("met" if r >= goal else "not met"))
        runs = " / ".join(f"{x:.2f}" for x in run_ratios(results, a, b)) or "-"
        rows.append(f"| {label} | {r:.2f}x | {runs} | {verdict} |")
    if rows:
        out.append("")
        out.append("| SyncBridge ratio (same run) | ratio of medians | each run "
                   "| target (issues 5, 13) |")
        out.append("|---|--:|--:|---|")
        out.extend(rows)
    errors = [f"- {k}: {e}" for k, s in results.items() for e in s.errors]
    if errors:
        out.append("")
        out.append("Errors (those runs are left out of the medians):")
        out.extend(errors)
    return "\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=10_000, help="no-op jobs per drain (default 10000)")
    p.add_argument("--quick", action="store_true", help="N=1000, 1 run: a smoke test")
    p.add_argument("--repeat", type=int, default=3, help="runs per measurement (default 3)")
    p.add_argument("--systems", default="",
                   help="comma-separated keys: " + ",".join(s.key for s in systems()))
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help="comma-separated: " + ",".join(WORKLOADS))
    p.add_argument("--sweep", action="store_true",
                   help="first try each system's alternative configurations on the drain "
                        "and keep the fastest")
    p.add_argument("--json", metavar="FILE", help="also write the raw samples as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.n, args.repeat = 1000, 1
    keys = {k for k in args.systems.split(",") if k}
    chosen = [s for s in systems() if not keys or s.key in keys]
    workloads = comma_list(args.workloads, WORKLOADS, "workload")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    for s in chosen:
        mod = importlib.import_module(s.module)
        try:
            s.version = mod.available() if hasattr(mod, "available") else ""
        except Skip as exc:
            s.skip = str(exc)
            log(f"skipping {s.label}: {exc}")
    from importlib.metadata import version

    for s in chosen:
        if s.key.startswith("sb_"):
            s.version = version("syncbridge")
    results: dict[str, Sample] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="syncbridge-bench-") as tmp:
        if args.sweep:
            log("sweep")
            for s in chosen:
                if not s.skip and s.sweep:
                    sweep(s, args.n, Path(tmp), log)
        for rep in range(args.repeat):
            log(f"run {rep + 1}/{args.repeat}")
            for w in workloads:
                for s in chosen:
                    if not s.skip and w in s.workloads:
                        measure(s, w, args.n, Path(tmp), results, log)
    table = render(chosen, results, args, time.perf_counter() - start)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {k: {"values": v.values, "p95": v.p95, "errors": v.errors}
             for k, v in results.items()}, indent=2))
    return 0
