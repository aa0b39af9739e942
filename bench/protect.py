"""`python -m bench.protect`: what upstream protection costs a drain (issue 11, point 6).

The same no-op drain as `python -m bench` (SyncBridge's default fleet: 2 processes x
concurrency 256), four ways, each on a fresh database:

  off        SYNCBRIDGE_UPSTREAM_PROTECTION=false: the claim alone
  none       protection on, the job type calls no upstream (today's drain)
  unlimited  protection on, the job type calls upstream `bench_up`, no limit configured
  limits     protection on, `bench_up` limited to 1,000,000 jobs/s and 1,000,000 in flight:
             limits configured but never binding (token bucket and in-flight count are
             taken before every claim)

The figure that matters is limits / off (issue: >= 0.9). Runs alternate between the modes
so a machine that slows down during the run slows all of them alike.

    python -m bench.protect [-n 10000] [--repeat 3] [--backends pg,sqlite]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import jobs, sb
from bench.common import Control, Workers, fresh_pg, fresh_sqlite, median, wait_until

MODES = ("off", "none", "unlimited", "limits")
UPSTREAM = "bench_up"
LIMITS = os.environ.get("BENCH_PROTECT_LIMITS",
                        '{"bench_up": {"rate": 1000000, "max_in_flight": 1000000}}')
FLEET = {"pg": {"concurrency": 256, "poll": 0.5}, "sqlite": {"concurrency": 256, "poll": 0.05}}
PROCS = 2


async def worker(cfg: dict[str, Any], ctl: Control) -> dict[str, Any]:
    from core.config import load_settings
    from core.logging import configure
    from core.worker import Worker

    configure(level="warning", quiet=True)
    mode = cfg["mode"]
    settings = load_settings(
        database_url=sb.sa_url(cfg["target"]), concurrency=cfg["concurrency"],
        poll_seconds=cfg["poll"], job_backoff_seconds_base=0.0, job_backoff_seconds_cap=0.0,
        lease_seconds=30, upstream_protection=mode != "off",
        upstream_limits=LIMITS if mode == "limits" else None)
    db = sb._open(cfg["target"])
    upstreams = {} if mode in ("off", "none") else {jobs.NOOP: (UPSTREAM,)}
    w = Worker(db, settings, registry=jobs.registry, upstreams=upstreams, start_paused=True)
    stats = await sb.run_on_cue(w, ctl)
    db.dispose()
    return {"processed": stats.processed}


def drain(target: str, backend: str, mode: str, n: int) -> float:
    sb.prepare(target)
    sb.enqueue(target, jobs.NOOP, n)
    done, close = sb.done_probe(target, n)
    cfgs = [dict(FLEET[backend], target=target, mode=mode) for _ in range(PROCS)]
    try:
        with Workers("bench.protect:worker", cfgs) as w:
            t0 = w.go()
            t1 = wait_until(done, timeout=max(120.0, n / 50))
            w.stop()
    finally:
        close()
    problem = sb.verify(target, jobs.NOOP, n, 1)
    if problem:
        raise RuntimeError(f"verification failed ({backend} {mode}): {problem}")
    return n / (t1 - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.protect")
    p.add_argument("-n", type=int, default=10_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--backends", default="pg,sqlite")
    args = p.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    rates: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            for run in range(args.repeat):
                for mode in MODES:
                    if backend == "pg":
                        ctx: Any = fresh_pg(f"protect_{mode}")
                    else:
                        ctx = fresh_sqlite(Path(tmp), f"protect_{mode}")
                    with ctx as target:
                        rate = drain(str(target), backend, mode, args.n)
                    rates.setdefault((backend, mode), []).append(rate)
                    print(f"{backend} {mode} run {run + 1}: {rate:,.0f} jobs/s",
                          file=sys.stderr, flush=True)
    print(f"no-op drain, N={args.n:,}, {PROCS} processes x concurrency 256, median of "
          f"{args.repeat} ({time.strftime('%Y-%m-%d')})\n")
    print("| database | mode | jobs/s (median) | runs | vs off |")
    print("|---|---|---:|---|---:|")
    for backend in backends:
        base = median(rates[(backend, "off")])
        for mode in MODES:
            r = rates[(backend, mode)]
            print(f"| {'PostgreSQL' if backend == 'pg' else 'SQLite'} | {mode} | "
                  f"{median(r):,.0f} | {', '.join(f'{x:,.0f}' for x in r)} | "
                  f"{median(r) / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
