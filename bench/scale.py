"""`python -m bench.scale`: SyncBridge with millions of rows in its tables (issue 13, point 3).

Five parts, each runnable alone (`--parts`), on PostgreSQL and SQLite (`--backends`) unless
said otherwise; every figure is printed beside its target with "met" or "not met (by how
much)". The pieces are the other benchmarks': `bench.console.seed` (one INSERT ... SELECT
per table), bench.sb's workers driven by bench.common's Workers, bench.console's headless
console run, bench.prune's drain-while-pruning run.

- drain: `--drain` fresh no-op jobs drained by `python -m bench`'s SyncBridge fleet (2
  processes x concurrency 256) on an empty database and on one holding `--rows` finished
  jobs with their attempts, interleaved, `--repeat` times; target seeded/empty >= 0.9.
- latency (PostgreSQL): enqueue -> start of probe jobs (one idle worker, a probe every
  20 ms carrying time.time(), as `python -m bench`'s latency workload) with `--pending`
  jobs pending but not due (an hour ahead), and with `--pending` due jobs of a type whose
  upstream is paused, against an empty table; target p50 <= 5 ms.
- console: bench.console's headless console run (embedded worker draining due `customer`
  jobs) over `--rows` jobs; targets first frame <= 1.5 s, refresh p95 <= 50 ms, key p95
  <= 50 ms, console RSS <= 150 MB.
- metrics: `syncbridge metrics` as a subprocess over the same database, median of 5,
  target <= 300 ms; `core.metrics.collect()` alone beside it.
- prune: bench.prune's run (drain alone, then drain while core.retention.prune deletes every
  seeded job) with `--prune-rows` (default 90 % of `--rows`) finished jobs seeded; targets
  drain ratio >= 0.8, claim p95 ratio <= 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench import console, jobs, prune, sb
from bench.common import (
    Control,
    Workers,
    comma_list,
    fresh_pg,
    fresh_sqlite,
    median,
    percentile,
    wait_until,
)

PARTS = ("drain", "latency", "console", "metrics", "prune")
NAMES = {"sqlite": "SQLite", "pg": "PostgreSQL"}
PROBES = 200  # probe jobs per latency run, as `python -m bench` (N >= 5000)
PAUSED_UPSTREAM = "bench_crm"  # bench.jobs.UPSTREAM_JOB calls it


class Log:
    """Progress lines on stderr with the time since the start."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:8.1f} s] {msg}", file=sys.stderr, flush=True)


# --- shared -------------------------------------------------------------------------------


def fleet(backend: str) -> tuple[int, dict[str, Any]]:
    """`python -m bench`'s SyncBridge configuration for the backend: (processes, cfg)."""
    from bench.cli import systems

    s = next(s for s in systems() if s.key == f"sb_{'pg' if backend == 'pg' else 'sqlite'}")
    return s.procs, dict(s.cfg)


@contextlib.contextmanager
def fresh(backend: str, tmp: Path, prefix: str) -> Iterator[str]:
    """A new database; bench.sb's target (a libpq DSN or a SQLite path)."""
    if backend == "pg":
        with fresh_pg(prefix) as dsn:
            yield dsn
    else:
        with fresh_sqlite(tmp, prefix) as path:
            yield str(path)


def settle(target: str) -> float:
    """After a bulk seed, PostgreSQL's tables as a long-lived queue's are: vacuumed (the
    visibility map set, nothing left for autovacuum to start on during a measurement) and
    analyzed. SQLite has nothing of the kind. Returns the seconds it took."""
    if not target.startswith("postgresql://"):
        return 0.0
    import psycopg

    t0 = time.perf_counter()
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) sync_jobs")
        conn.execute("VACUUM (ANALYZE) sync_job_attempts")
    return time.perf_counter() - t0


def seeded(target: str, rows: int, pending: int, due_type: str, **kw: Any) -> dict[str, Any]:
    """Seed through bench.console.seed, settle, and measure the sizes."""
    db = sb._open(target)
    try:
        seconds = console.seed(db, rows, pending, due_type, **kw)
        vacuum = settle(target)
        size = prune.sizes(db)
    finally:
        db.dispose()
    return {"seed_s": seconds, "vacuum_s": vacuum, "size_mb": size}


def mb(d: dict[str, float]) -> str:
    return " + ".join(f"{k} {v:,.0f}" for k, v in d.items() if k != "pages")


def _raw_scalar(target: str, sql: str, *params: Any) -> Any:
    conn = sb._raw(target)
    try:
        if target.startswith("postgresql://"):
            sql = sql.replace("?", "%s")
        return conn.execute(sql, params).fetchone()[0]
    finally:
        conn.close()


# --- 1. drain: empty vs seeded ---------------------------------------------------------------


def drain_once(backend: str, target: str, n: int, prefix: str) -> float:
    """bench.sb's fleet drains n fresh no-op jobs (entity ids `prefix`0..n-1); jobs/s,
    verified from the tables (n successes with one attempt each, for these ids)."""
    procs, cfg = fleet(backend)
    sb.enqueue(target, jobs.NOOP, n, prefix=prefix)
    done, close = sb.done_probe(target)  # the seed has no pending or running job
    try:
        with Workers("bench.sb:worker", [dict(cfg, target=target)] * procs) as ws:
            t0 = ws.go()
            t1 = wait_until(done, timeout=max(120.0, n / 50))
            ws.stop()
    finally:
        close()
    like = prefix.replace("_", "\\_") + "%"
    ok = _raw_scalar(target, "SELECT count(*) FROM sync_jobs WHERE job_type = ? AND status = "
                     "'success' AND entity_id LIKE ? ESCAPE '\\'", jobs.NOOP, like)
    att = _raw_scalar(target, "SELECT count(*) FROM sync_job_attempts a JOIN sync_jobs j ON "
                      "j.id = a.job_id WHERE j.job_type = ? AND j.entity_id LIKE ? ESCAPE '\\' "
                      "AND a.outcome = 'success'", jobs.NOOP, like)
    if ok != n or att != n:
        raise RuntimeError(f"verification failed: {ok}/{n} succeeded, {att} attempts")
    return n / (t1 - t0)


def part_drain(backend: str, args: argparse.Namespace, tmp: Path, log: Log) -> dict[str, Any]:
    out: dict[str, Any] = {"empty": [], "seeded": []}
    with fresh(backend, tmp, "scale_seeded") as big:
        log(f"{backend} drain: seeding {args.rows:,} finished jobs")
        out.update(seeded(big, args.rows, 0, jobs.NOOP, running=False))
        log(f"{backend} drain: seeded in {out['seed_s']:.1f} s (+ vacuum {out['vacuum_s']:.1f} "
            f"s), {mb(out['size_mb'])} MB")
        for rep in range(args.repeat):
            with fresh(backend, tmp, "scale_empty") as empty:
                sb.prepare(empty)
                out["empty"].append(drain_once(backend, empty, args.drain, f"r{rep}_"))
            out["seeded"].append(drain_once(backend, big, args.drain, f"r{rep}_"))
            log(f"{backend} drain {rep + 1}/{args.repeat}: empty {out['empty'][-1]:,.0f}, "
                f"seeded {out['seeded'][-1]:,.0f} jobs/s")
        out["size_after_mb"] = _sizes(big)
    return out


def _sizes(target: str) -> dict[str, float]:
    db = sb._open(target)
    try:
        return prune.sizes(db)
    finally:
        db.dispose()


# --- 2. enqueue -> start with a backlog (PostgreSQL) -----------------------------------------


async def paused_worker(cfg: dict[str, Any], ctl: Control) -> dict[str, Any]:
    """bench.sb's worker with the probe and no-op types beside bench.jobs.UPSTREAM_JOB (which
    calls the paused upstream), so its claims are admission-checked like a real app's."""
    jobs.upstream_app = jobs.upstream_app.merged(jobs.registry)
    return await sb.worker(cfg, ctl)


def latency_once(target: str, worker: str, cfg: dict[str, Any]) -> list[float]:
    """`python -m bench`'s latency workload: one idle worker process, PROBES probe jobs
    enqueued one at a time 20 ms apart; the handler's start minus the enqueue time (s)."""
    conn = sb._raw(target)
    sql = ("SELECT EXISTS (SELECT 1 FROM sync_jobs WHERE job_type = 'bench_probe' "
           "AND status IN ('pending', 'running'))")
    try:
        with Workers(worker, [dict(cfg, target=target)]) as ws:
            ws.go()
            time.sleep(0.5)  # the worker is idle: waiting on its wake-up or its poll
            one = sb.enqueue_probe(target)
            for i in range(PROBES):
                one(i)
                time.sleep(0.02)
            wait_until(lambda: not conn.execute(sql).fetchone()[0], timeout=120)
            time.sleep(0.2)
            results = ws.stop()
    finally:
        conn.close()
    lat = [x for r in results for x in r.get("latencies", [])]
    if len(lat) != PROBES:
        raise RuntimeError(f"{len(lat)}/{PROBES} probes reached a handler")
    return lat


def _pause(target: str) -> None:
    from core import upstream_protection

    db = sb._open(target)
    try:
        upstream_protection.pause(
            db, PAUSED_UPSTREAM, 86400, actor="bench.scale", known=["bench_crm", "bench_billing"],
            by_type={jobs.UPSTREAM_JOB: ("bench_crm", "bench_billing")})
    finally:
        db.dispose()


def part_latency(args: argparse.Namespace, tmp: Path, log: Log) -> dict[str, Any]:
    _, cfg = fleet("pg")
    variants: dict[str, dict[str, Any]] = {
        "empty": {"samples": []}, "not_due": {"samples": []}, "paused": {"samples": []}}
    with contextlib.ExitStack() as stack:
        nd = stack.enter_context(fresh("pg", tmp, "scale_notdue"))
        log(f"latency: seeding {args.pending:,} pending jobs due in an hour")
        variants["not_due"].update(seeded(nd, args.pending, args.pending, jobs.NOOP,
                                          pending_at=time.time() + 3600))
        pz = stack.enter_context(fresh("pg", tmp, "scale_paused"))
        log(f"latency: seeding {args.pending:,} due `{jobs.UPSTREAM_JOB}` jobs, "
            f"upstream {PAUSED_UPSTREAM} paused")
        variants["paused"].update(seeded(pz, args.pending, args.pending, jobs.UPSTREAM_JOB))
        _pause(pz)
        for rep in range(args.repeat):
            with fresh("pg", tmp, "scale_lat_empty") as empty:
                sb.prepare(empty)
                variants["empty"]["samples"].append(latency_once(empty, "bench.sb:worker", cfg))
            variants["not_due"]["samples"].append(latency_once(nd, "bench.sb:worker", cfg))
            variants["paused"]["samples"].append(latency_once(
                pz, "bench.scale:paused_worker", dict(cfg, upstream_url="http://127.0.0.1:9")))
            log(f"latency {rep + 1}/{args.repeat}: p50 " + ", ".join(
                f"{k} {percentile(v['samples'][-1], 0.5) * 1000:.1f} ms"
                for k, v in variants.items()))
        left = _raw_scalar(pz, "SELECT count(*) FROM sync_jobs WHERE job_type = ? AND "
                           "status = 'pending'", jobs.UPSTREAM_JOB)
        variants["paused"]["still_pending"] = left
    for v in variants.values():
        runs = v.pop("samples")
        v["p50_ms"] = [percentile(r, 0.5) * 1000 for r in runs]
        v["p95_ms"] = [percentile(r, 0.95) * 1000 for r in runs]
    return variants


# --- 3. console and 4. metrics over --rows jobs ---------------------------------------------


def metrics_cli(url: str, times: int = 5) -> list[float]:
    """Wall time (ms) of the real `syncbridge metrics` command, a fresh process each time."""
    exe = Path(sys.executable).with_name("syncbridge")
    cmd = [str(exe)] if exe.exists() else [shutil.which("syncbridge") or "syncbridge"]
    samples = []
    for _ in range(times):
        t0 = time.perf_counter()
        proc = subprocess.run([*cmd, "metrics", "--db", url], capture_output=True, text=True,
                              check=False, timeout=600)
        samples.append((time.perf_counter() - t0) * 1000)
        if proc.returncode != 0 or "TOTAL" not in proc.stdout:
            raise RuntimeError(f"syncbridge metrics failed ({proc.returncode}): "
                               f"{proc.stderr.strip()[-300:]}")
    return samples


def cli_floor(times: int = 5) -> float:
    """`syncbridge --help`: the command's own start-up, no database (ms, median)."""
    exe = Path(sys.executable).with_name("syncbridge")
    cmd = [str(exe)] if exe.exists() else [shutil.which("syncbridge") or "syncbridge"]
    samples = []
    for _ in range(times):
        t0 = time.perf_counter()
        subprocess.run([*cmd, "--help"], capture_output=True, check=False, timeout=60)
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def part_console(backend: str, parts: list[str], args: argparse.Namespace, tmp: Path,
                 log: Log) -> dict[str, Any]:
    from core import metrics

    due = min(args.console_due, args.rows // 10)
    out: dict[str, Any] = {"due": due}
    with fresh(backend, tmp, "scale_console") as target:
        log(f"{backend} console/metrics: seeding {args.rows:,} jobs ({due:,} due customer)")
        out.update(seeded(target, args.rows, due, "customer"))
        log(f"{backend} console/metrics: seeded in {out['seed_s']:.1f} s (+ vacuum "
            f"{out['vacuum_s']:.1f} s), {mb(out['size_mb'])} MB")
        url = sb.sa_url(target)
        if "console" in parts:
            out["console"] = console.drive_in_child(url, args.concurrency)
            c = out["console"]
            if "error" in c:
                raise RuntimeError(f"console: {c['error']}")
            log(f"{backend} console: first frame {c['first_frame_ms']:.0f} ms, refresh p95 "
                f"{c['refresh_ms'][1]:.1f} ms, key p95 {c['key_ms'][1]:.1f} ms, RSS "
                f"{c['rss_mb'][1]:.0f} MB")
        if "metrics" in parts:
            out["metrics_cli_ms"] = metrics_cli(url)
            db = sb._open(target)
            try:
                out["collect_ms"] = console.timed(lambda: metrics.collect(db), times=5)
            finally:
                db.dispose()
            log(f"{backend} metrics: syncbridge metrics median "
                f"{median(out['metrics_cli_ms']):.0f} ms, collect() {out['collect_ms']:.0f} ms")
    return out


# --- 5. prune -------------------------------------------------------------------------------


def part_prune(backend: str, args: argparse.Namespace, tmp: Path, log: Log) -> dict[str, Any]:
    rows = args.prune_rows or args.rows * 9 // 10
    opts = argparse.Namespace(drain=args.drain, workers=fleet(backend)[0],
                              concurrency=fleet(backend)[1]["concurrency"],
                              during_repeats=args.repeat, during_gap=args.prune_gap)
    old = os.environ.get("SYNCBRIDGE_PRUNE_INTERVAL_SECONDS")
    os.environ["SYNCBRIDGE_PRUNE_INTERVAL_SECONDS"] = "0"  # the workers' own pruners: off
    try:
        with fresh(backend, tmp, "scale_prune") as target:
            log(f"{backend} prune: seeding {rows:,} finished jobs")
            return prune.run_system(NAMES[backend], target, rows, opts,
                                    log=lambda m: log(f"{backend} prune: {m}"))
    finally:
        if old is None:
            os.environ.pop("SYNCBRIDGE_PRUNE_INTERVAL_SECONDS", None)
        else:
            os.environ["SYNCBRIDGE_PRUNE_INTERVAL_SECONDS"] = old


# --- report ---------------------------------------------------------------------------------


def verdict(value: float, target: float, at_least: bool, unit: str = "") -> str:
    """"met", or "not met (by ...)": the shortfall in the figure's unit and in %."""
    if value != value:  # NaN
        return "not measured"
    ok = value >= target if at_least else value <= target
    if ok:
        return "met"
    gap = abs(value - target)
    return f"not met (by {gap:,.2f}{unit}, {gap / target:.0%})"


class Table:
    def __init__(self, title: str) -> None:
        self.lines = [f"\n### {title}\n", "| figure | db | measured | target | |",
                      "|---|---|--:|---|---|"]

    def info(self, label: str, backend: str, text: str) -> None:
        self.lines.append(f"| {label} | {NAMES.get(backend, backend)} | {text} | | |")

    def goal(self, label: str, backend: str, value: float, text: str, target: float,
             at_least: bool, unit: str = "") -> None:
        sign = ">=" if at_least else "<="
        self.lines.append(f"| {label} | {NAMES.get(backend, backend)} | {text} "
                          f"| {sign} {target:g}{unit} | {verdict(value, target, at_least, unit)} |")

    def __str__(self) -> str:
        return "\n".join(self.lines)


def _runs(values: list[float], fmt: str = "{:,.0f}") -> str:
    return " / ".join(fmt.format(v) for v in values)


def render(results: dict[str, Any], args: argparse.Namespace) -> str:
    out = [f"`python -m bench.scale --rows {args.rows} --pending {args.pending} --drain "
           f"{args.drain} --repeat {args.repeat} --backends {args.backends} --parts "
           f"{args.parts}`"]
    if "drain" in results:
        t = Table(f"Drain of {args.drain:,} no-op jobs: empty tables vs {args.rows:,} finished "
                  f"jobs (median of {args.repeat})")
        for b, r in results["drain"].items():
            e, s = median(r["empty"]), median(r["seeded"])
            ratios = [x / y for x, y in zip(r["seeded"], r["empty"], strict=True)]
            t.info("seeding (INSERT ... SELECT per table, s) + VACUUM ANALYZE (s)", b,
                   f"{r['seed_s']:.1f} + {r['vacuum_s']:.1f}")
            t.info("size seeded (MB)", b, mb(r["size_mb"]))
            t.info("drain, empty tables (jobs/s, each run)", b, f"{e:,.0f} ({_runs(r['empty'])})")
            t.info("drain, seeded tables (jobs/s, each run)", b,
                   f"{s:,.0f} ({_runs(r['seeded'])})")
            t.goal("drain ratio seeded / empty", b, s / e,
                   f"{s / e:.2f} (each run {_runs(ratios, '{:.2f}')})", 0.9, True)
        out.append(str(t))
    if "latency" in results:
        r = results["latency"]
        t = Table(f"Enqueue -> start, one idle worker, {PROBES} probes 20 ms apart "
                  f"(PostgreSQL, median over {args.repeat} runs)")
        labels = {"empty": "empty table",
                  "not_due": f"{args.pending:,} pending, due in an hour",
                  "paused": f"{args.pending:,} due, their upstream paused"}
        for k, v in r.items():
            p50, p95 = median(v["p50_ms"]), median(v["p95_ms"])
            if "seed_s" in v:
                t.info(f"{labels[k]}: seeding + vacuum (s), size (MB)", "pg",
                       f"{v['seed_s']:.1f} + {v['vacuum_s']:.1f}, {mb(v['size_mb'])}")
            t.goal(f"{labels[k]}: p50 (p95) ms", "pg", p50,
                   f"{p50:.1f} ({p95:.1f}); p50 each run {_runs(v['p50_ms'], '{:.1f}')}",
                   5, False, " ms")
        if "still_pending" in r.get("paused", {}):
            t.info("paused-type jobs still pending at the end", "pg",
                   f"{r['paused']['still_pending']:,}")
        out.append(str(t))
    if "console" in results:
        t = Table(f"Console and `syncbridge metrics` over {args.rows:,} jobs")
        for b, r in results["console"].items():
            t.info("seeding + VACUUM ANALYZE (s)", b, f"{r['seed_s']:.1f} + {r['vacuum_s']:.1f}")
            t.info("size (MB)", b, mb(r["size_mb"]))
            c = r.get("console")
            if c:
                t.goal("first frame (ms)", b, c["first_frame_ms"], f"{c['first_frame_ms']:.0f}",
                       1500, False, " ms")
                t.goal("refresh, median / p95 (ms)", b, c["refresh_ms"][1],
                       console._pair(c["refresh_ms"]), 50, False, " ms")
                t.goal("key to the frame showing it, median / p95 (ms)", b, c["key_ms"][1],
                       console._pair(c["key_ms"]), 50, False, " ms")
                slowest = max(c["keys_ms"], key=lambda k: c["keys_ms"][k][1])
                t.info("slowest key, median / max (ms)", b,
                       f"`{slowest}` {console._pair(c['keys_ms'][slowest])}")
                t.goal("RSS console process, at the end / peak (MB)", b, c["rss_mb"][1],
                       console._pair(c["rss_mb"], 0), 150, False, " MB")
                t.info("embedded worker meanwhile (jobs/s); due left at the end", b,
                       f"{c['worker_jobs_per_s']:,.0f}; {c['due_left']:,} of {r['due']:,}")
            if "metrics_cli_ms" in r:
                m = median(r["metrics_cli_ms"])
                t.goal("`syncbridge metrics` wall, median of 5 (ms)", b, m,
                       f"{m:.0f} (each {_runs(r['metrics_cli_ms'])})", 300, False, " ms")
                t.info("`core.metrics.collect()` alone, median of 5 (ms)", b,
                       f"{r['collect_ms']:.0f}")
        if "_cli_floor_ms" in results:
            t.info("`syncbridge --help` (start-up alone, ms)", "-",
                   f"{results['_cli_floor_ms']:.0f}")
        out.append(str(t))
    if "prune" in results:
        t = Table(f"Pruning while draining {args.drain:,} jobs")
        for b, r in results["prune"].items():
            t.info("seeded finished jobs / attempts", b,
                   f"{r['seeded']:,} / {r['seeded_attempts']:,} (seed {r['seed_s']:.1f} s)")
            during = [r["loaded"], *r.get("later", [])]
            base = r["base"]
            t.info("drain alone / while pruning (jobs/s)", b,
                   f"{base['jobs_s']:,.0f} / {_runs([d['jobs_s'] for d in during])}")
            ratios = [d["jobs_s"] / base["jobs_s"] for d in during]
            ratio = median(ratios)
            t.goal("drain ratio (pruning / alone), median of the drains during the prune", b,
                   ratio, f"{ratio:.2f} (each {_runs(ratios, '{:.2f}')})", 0.8, True)
            crs = [d["claim_p95_ms"] / base["claim_p95_ms"] for d in during]
            cr = median(crs)
            t.goal("claim p95 ratio (pruning / alone), median", b, cr,
                   f"{cr:.2f} (each {_runs(crs, '{:.2f}')}; alone {base['claim_p95_ms']:.1f} "
                   f"ms, pruning {_runs([d['claim_p95_ms'] for d in during], '{:.1f}')} ms)",
                   2, False)
            p = r["pruned"]
            t.info("pruned jobs + attempts, time (s), rows/s", b,
                   f"{p['jobs']:,} + {p['attempts']:,}, {p['seconds']:.1f}, "
                   f"{r['rows_per_s']:,.0f}")
            t.info("prune still running when each drain ended; seeded jobs left", b,
                   "/".join("yes" if d.get("prune_running") else "no" for d in during)
                   + f"; {r['left']:,}")
            t.info("size before -> after (MB)", b, f"{mb(r['before'])} -> {mb(r['after'])}")
        out.append(str(t))
    return "\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.scale",
                                description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rows", type=int, default=10_000_000,
                   help="jobs seeded for drain, console, metrics (default 10,000,000)")
    p.add_argument("--pending", type=int, default=1_000_000,
                   help="pending jobs of the latency part (default 1,000,000)")
    p.add_argument("--drain", type=int, default=20_000, help="fresh jobs per drain (20,000)")
    p.add_argument("--repeat", type=int, default=3, help="runs of drain / latency (median)")
    p.add_argument("--backends", default="sqlite,pg", help="sqlite,pg")
    p.add_argument("--parts", default=",".join(PARTS), help=",".join(PARTS))
    p.add_argument("--console-due", type=int, default=150_000,
                   help="due customer jobs among --rows for the console's embedded worker "
                        "(at most rows/10; default 150,000 as bench.console)")
    p.add_argument("--concurrency", type=int, default=64, help="the console's worker")
    p.add_argument("--prune-rows", type=int, default=0,
                   help="finished jobs seeded and pruned (default 90%% of --rows)")
    p.add_argument("--prune-gap", type=float, default=60.0,
                   help="seconds between the drains made while the prune runs (up to "
                        "--repeat of them, as long as it runs; default 60)")
    p.add_argument("--json", metavar="FILE", help="also write the raw results as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    parts = comma_list(args.parts, PARTS, "part")
    backends = comma_list(args.backends, NAMES, "backend")
    from core.logging import configure

    configure(level="warning", quiet=True)
    log = Log()
    results: dict[str, Any] = {}
    steps: list[tuple[str, Callable[[Path], None]]] = []
    for b in backends:
        if "drain" in parts:
            steps.append(("drain", lambda tmp, b=b: results.setdefault("drain", {}).update(
                {b: part_drain(b, args, tmp, log)})))
    if "latency" in parts:
        steps.append(("latency", lambda tmp: results.update(latency=part_latency(args, tmp, log))))
    for b in backends:
        if "console" in parts or "metrics" in parts:
            steps.append(("console", lambda tmp, b=b: results.setdefault("console", {}).update(
                {b: part_console(b, parts, args, tmp, log)})))
    if "metrics" in parts:
        steps.append(("metrics", lambda tmp: results.update(_cli_floor_ms=cli_floor())))
    for b in backends:
        if "prune" in parts:
            steps.append(("prune", lambda tmp, b=b: results.setdefault("prune", {}).update(
                {b: part_prune(b, args, tmp, log)})))
    with tempfile.TemporaryDirectory(prefix="syncbridge-scale-", dir=os.environ.get(
            "BENCH_TMP")) as tmp:
        for name, step in steps:
            t0 = time.perf_counter()
            step(Path(tmp))
            log(f"{name}: step done in {time.perf_counter() - t0:.0f} s")
    print(render(results, args))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
