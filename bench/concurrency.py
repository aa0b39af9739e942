"""`python -m bench.concurrency`: one worker process against a 50 ms upstream, at several
concurrencies, on PostgreSQL and SQLite.

Each job is an integration job (`bench.jobs.UPSTREAM_JOB`, the demo's customer job: one GET
and one PUT, each answered after `--delay-ms` by `bench/latency_server.py`, a process of
its own on 127.0.0.1), so a job takes at least 2 x delay, and a worker running C of them at
once can at best finish C / (2 x delay) jobs a second: the ideal. Per run:

- a fresh database (PostgreSQL: a new `bench_*` database; SQLite: a new file) with N jobs
  enqueued in bulk, N sized for `--steady` seconds of draining at the ideal rate;
- one worker process (`bench.sb.worker`, the real `core.worker.Worker`), started and warmed
  up before "go";
- every `--sample` seconds the parent reads the number of successful jobs and the worker's
  CPU time (/proc); the steady part is from 10 % to 90 % of N done: jobs/s, worker CPU %
  (of one core) and the latency server's over that part;
- p50 / p95 job duration: the attempt rows' `duration_ms` (the handler's run) of the jobs
  finished in the steady part;
- every run verified: all N jobs `success`, one attempt each.

Configurations are interleaved (for each repeat: each C, each database) and the table shows
medians of the repeats.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import jobs, sb
from bench.common import Workers, comma_list, fresh_pg, fresh_sqlite, median, percentile
from bench.latency_server import Running, proc_cpu_seconds, start

BACKENDS = {"pg": "PostgreSQL", "sqlite": "SQLite"}


@dataclass
class Run:
    rate: float
    cpu: float  # worker CPU over the steady part, % of one core
    server_cpu: float
    p50: float
    p95: float
    n: int
    steady_s: float
    connections: int  # TCP connections the latency server accepted during the run
    max_open: int  # most connections open at once


@dataclass
class Cell:
    runs: list[Run] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def ideal(c: int, delay_ms: float) -> float:
    return c / (2 * delay_ms / 1000.0)


def jobs_for(c: int, delay_ms: float, steady: float) -> int:
    # The steady part is 80 % of the jobs; a little over `steady` s of it at the ideal rate.
    return max(200, math.ceil(ideal(c, delay_ms) * steady / 0.8 * 1.05))


COUNT_DONE = "SELECT count(*) FROM sync_jobs WHERE status = 'success'"


def _durations(target: str, t0: float, t1: float) -> list[float]:
    conn = sb._raw(target)
    try:
        ph = "%s" if target.startswith("postgresql://") else "?"
        rows = conn.execute(
            f"SELECT duration_ms FROM sync_job_attempts WHERE finished_at >= {ph} "
            f"AND finished_at <= {ph}", (t0, t1)).fetchall()
    finally:
        conn.close()
    return [float(r[0]) for r in rows if r[0] is not None]


def _crossing(series: list[tuple[float, int, float, float]], target: float
              ) -> tuple[float, float, float]:
    """(wall time, worker CPU s, server CPU s) where the done count crosses `target`,
    interpolated between the two samples around it."""
    for (ta, ca, wa, sa), (tb, cb, wb, sbv) in itertools.pairwise(series):
        if ca <= target <= cb and cb > ca:
            f = (target - ca) / (cb - ca)
            return ta + f * (tb - ta), wa + f * (wb - wa), sa + f * (sbv - sa)
    raise RuntimeError("the done count never crossed the steady window's edge")


def one_run(backend: str, c: int, args: argparse.Namespace, server: Running, tmp: Path,
            log: Any) -> Run:
    n = args.n or jobs_for(c, args.delay_ms, args.steady)
    ctx = fresh_pg("conc") if backend == "pg" else fresh_sqlite(tmp, "conc")
    with ctx as t:
        target = str(t)
        sb.prepare(target)
        sb.enqueue(target, jobs.UPSTREAM_JOB, n, prefix="c_")
        conn = sb._raw(target)
        cfg = {"target": target, "concurrency": c, "upstream_url": server.url,
               "poll": 0.5 if backend == "pg" else 0.05}
        before = server.stats()
        series: list[tuple[float, int, float, float]] = []
        spy: subprocess.Popen[bytes] | None = None
        try:
            with Workers("bench.sb:worker", [cfg]) as w:
                pid = w.procs[0].pid
                w.go()
                deadline = time.monotonic() + max(120.0, 10 * n / ideal(c, args.delay_ms))
                done = 0
                while done < n:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{done}/{n} jobs done before the deadline")
                    done = int(conn.execute(COUNT_DONE).fetchone()[0])
                    series.append((time.time(), done, proc_cpu_seconds(pid),
                                   server.cpu_seconds()))
                    if args.py_spy and spy is None and done >= 0.1 * n:
                        name = f"{backend}-c{c}-{int(time.time())}.{args.py_spy_format}"
                        out = Path(args.py_spy) / name
                        spy = subprocess.Popen(
                            [str(Path(sys.executable).parent / "py-spy"), "record",
                             "--pid", str(pid), "--duration", str(int(args.steady)),
                             "--rate", "200", "--output", str(out), "--nonblocking",
                             *(["--format", "raw"] if str(out).endswith(".txt") else [])],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                        log(f"    py-spy -> {out}")
                    time.sleep(args.sample)
                w.stop()
        finally:
            conn.close()
            if spy is not None:
                spy.wait(60)
        after = server.stats()
        problem = sb.verify(target, jobs.UPSTREAM_JOB, n, 1)
        if problem:
            raise RuntimeError(f"verification failed: {problem}")
        t1, w1, s1 = _crossing(series, 0.1 * n)
        t2, w2, s2 = _crossing(series, 0.9 * n)
        durations = _durations(target, t1, t2)
    span = t2 - t1
    return Run(rate=0.8 * n / span, cpu=100 * (w2 - w1) / span,
               server_cpu=100 * (s2 - s1) / span, p50=percentile(durations, 0.5),
               p95=percentile(durations, 0.95), n=n, steady_s=span,
               connections=after["connections"] - before["connections"],
               max_open=after["max_open_connections"])


def render(cells: dict[tuple[str, int], Cell], cs: list[int], backends: list[str],
           args: argparse.Namespace) -> str:
    out = [f"{args.delay_ms:g} ms upstream (GET + PUT per job), one worker process, "
           f"{args.repeat} run(s) per cell (median), {platform.python_implementation()} "
           f"{platform.python_version()}", "",
           "| db | C | jobs (N) | steady s | jobs/s | ideal C/(2x" f"{args.delay_ms:g} ms) "
           "| ratio | each run | worker CPU % | upstream CPU % | job p50 / p95 ms "
           "| connections opened |",
           "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for b in backends:
        for c in cs:
            cell = cells.get((b, c))
            if cell is None or not cell.runs:
                err = cell.errors[0] if cell and cell.errors else "-"
                out.append(f"| {BACKENDS[b]} | {c} | error: {err} |")
                continue
            r = cell.runs
            rate = median([x.rate for x in r])
            best = ideal(c, args.delay_ms)
            each = " / ".join(f"{x.rate / best:.2f}" for x in r)
            out.append(
                f"| {BACKENDS[b]} | {c} | {r[0].n:,} | {median([x.steady_s for x in r]):.1f} "
                f"| {rate:,.0f} | {best:,.0f} | {rate / best:.2f} | {each} "
                f"| {median([x.cpu for x in r]):.0f} | {median([x.server_cpu for x in r]):.0f} "
                f"| {median([x.p50 for x in r]):.0f} / {median([x.p95 for x in r]):.0f} "
                f"| {int(median([x.connections for x in r])):,} |")
    errors = [f"- {BACKENDS[b]} C={c}: {e}" for (b, c), cell in cells.items()
              for e in cell.errors]
    if errors:
        out += ["", "Errors (left out of the medians):", *errors]
    return "\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.concurrency",
                                description=__doc__.splitlines()[0])
    p.add_argument("-c", "--concurrency", default="8,32,128,400",
                   help="comma-separated concurrencies (default 8,32,128,400)")
    p.add_argument("--db", default="pg,sqlite", help="comma-separated: pg,sqlite")
    p.add_argument("--delay-ms", type=float, default=50.0, help="upstream delay (default 50)")
    p.add_argument("--steady", type=float, default=5.0,
                   help="seconds of steady draining at the ideal rate (default 5)")
    p.add_argument("-n", type=int, default=0, help="jobs per run (default: from --steady)")
    p.add_argument("--repeat", type=int, default=3, help="runs per cell (default 3)")
    p.add_argument("--sample", type=float, default=0.1, help="seconds between samples")
    p.add_argument("--py-spy", metavar="DIR",
                   help="record a py-spy profile of the worker over each steady part")
    p.add_argument("--py-spy-format", choices=("svg", "txt"), default="svg",
                   help="flame graph (svg) or collapsed stacks (txt)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cs = [int(x) for x in args.concurrency.split(",") if x]
    backends = comma_list(args.db, BACKENDS, "database")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    cells: dict[tuple[str, int], Cell] = {}
    loads = [os.getloadavg()[0]]
    t0 = time.perf_counter()
    with start(args.delay_ms) as server, \
            tempfile.TemporaryDirectory(prefix="syncbridge-conc-") as tmp:
        for rep in range(args.repeat):
            log(f"run {rep + 1}/{args.repeat}")
            for c in cs:
                for b in backends:
                    cell = cells.setdefault((b, c), Cell())
                    try:
                        r = one_run(b, c, args, server, Path(tmp), log)
                    except Exception as exc:  # one failing cell must not sink the table
                        cell.errors.append(f"{type(exc).__name__}: {exc}")
                        log(f"  ! {b} C={c}: {exc}")
                        continue
                    cell.runs.append(r)
                    loads.append(os.getloadavg()[0])
                    log(f"  {b} C={c}: {r.rate:,.0f} jobs/s "
                        f"({r.rate / ideal(c, args.delay_ms):.2f} of ideal), worker CPU "
                        f"{r.cpu:.0f} %, p50/p95 {r.p50:.0f}/{r.p95:.0f} ms, "
                        f"{r.connections} connections, load {loads[-1]:.2f}")
    print(render(cells, cs, backends, args))
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{time.perf_counter() - t0:.0f} s; 1-minute load average during the runs: "
          f"{min(loads):.2f}-{max(loads):.2f} (median {median(loads):.2f}); "
          f"{os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
