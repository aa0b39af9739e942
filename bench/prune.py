"""`python -m bench.prune -n 200000`: does pruning hurt the queue?

On a fresh database per system (SQLite file, new PostgreSQL database): seed N finished jobs
with their attempts (bench.console.seed: one INSERT ... SELECT per table), then drain
`--drain` fresh no-op jobs with `--workers` worker processes twice:

1. alone (the baseline);
2. while core.retention.prune deletes every seeded job (retention 1 s at the seeding time,
   so the fresh jobs never qualify), in a thread of this process, as a worker's pruner does.

Printed per system: drain jobs/s of each, their ratio, claim latency p95 of each (every
core.leases.claim call the workers made while draining, timed inside the workers) and the
ratio, rows pruned per second (jobs + attempts over the prune's own run time) and whether
the prune was still running when the drain ended, and the tables' (PostgreSQL) / file's
(SQLite) size before and after. The workers' own pruners are off
(SYNCBRIDGE_PRUNE_INTERVAL_SECONDS=0). Nothing is asserted; the figures are this run's.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import jobs, sb
from bench.common import Control, Workers, fresh_pg, fresh_sqlite, percentile, wait_until


async def worker(cfg: dict[str, Any], ctl: Control) -> dict[str, Any]:
    """bench.sb's worker, with every claim call timed."""
    from core import leases

    claims: list[float] = []
    real = leases.claim

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            if ctl.go.is_set():
                claims.append(time.perf_counter() - t0)

    leases.claim = timed
    out = await sb.worker(cfg, ctl)
    return {**out, "claims": claims, "latencies": []}


def sizes(db: Any) -> dict[str, float]:
    """MB: sync_jobs and sync_job_attempts with their indexes (PostgreSQL), or the file."""
    from sqlalchemy import text

    if db.is_postgres:
        with db.read() as conn:
            return {t: conn.execute(text("SELECT pg_total_relation_size(:t)"), {"t": t})
                    .scalar() / 1e6 for t in ("sync_jobs", "sync_job_attempts")}
    raw = db.engine.raw_connection()
    try:
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        pages = raw.execute("PRAGMA page_count").fetchone()[0]
        page = raw.execute("PRAGMA page_size").fetchone()[0]
    finally:
        raw.close()
    path = db.engine.url.database
    return {"file": os.path.getsize(path) / 1e6, "pages": pages * page / 1e6}


def drain(target: str, n: int, workers: int, concurrency: int, prefix: str,
          during: threading.Thread | None = None) -> dict[str, Any]:
    cfg = {"target": target, "concurrency": concurrency, "poll": 0.05}
    sb.enqueue(target, jobs.NOOP, n, prefix=prefix)
    # Not sb.done_probe: the seeded rows include running jobs (live leases of no worker).
    conn = sb._raw(target)
    sql = ("SELECT EXISTS (SELECT 1 FROM sync_jobs WHERE job_type = 'bench_noop' "
           "AND status IN ('pending', 'running'))")

    def done() -> bool:
        return not conn.execute(sql).fetchone()[0]

    close = conn.close
    try:
        with Workers("bench.prune:worker", [cfg] * workers) as ws:
            if during is not None:
                during.start()
            t0 = ws.go()
            t1 = wait_until(done, timeout=600)
            results = ws.stop()
    finally:
        close()
    claims = [c for r in results for c in r.get("claims", [])]
    return {"jobs_s": n / (t1 - t0), "claim_p95_ms": percentile(claims, 0.95) * 1000,
            "claims": len(claims), "ended": time.perf_counter()}


def run_system(name: str, target: str, rows: int, args: argparse.Namespace,
               log: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """Seed `rows` finished jobs, drain alone, drain while pruning them all (bench.scale
    calls this too, at millions of rows; `log` gets a progress line per step)."""
    from sqlalchemy import func, select

    from bench.console import seed
    from core import clock, retention
    from core.models import attempts_t, jobs_t

    db = sb._open(target)
    try:
        seconds = seed(db, rows, pending=0, due_type=jobs.NOOP)
        log(f"seeded {rows:,} finished jobs in {seconds:.1f} s")
        with db.read() as conn:
            seeded_attempts = conn.execute(select(func.count()).select_from(attempts_t)).scalar()
        before = sizes(db)
        seeded_at = clock.now()
        base = drain(target, args.drain, args.workers, args.concurrency, "a")
        log(f"drain alone: {base['jobs_s']:,.0f} jobs/s, claim p95 "
            f"{base['claim_p95_ms']:.1f} ms; now the drain while pruning")
        pruned: dict[str, Any] = {}

        def prune() -> None:
            policy = retention.RetentionPolicy(dict.fromkeys(retention.PRUNABLE, 1.0), {}, None)
            t0 = time.perf_counter()
            r = retention.prune(db, policy, owner="bench", now=seeded_at)
            pruned.update(jobs=r.counts.jobs, attempts=r.counts.attempts, batches=r.batches,
                          seconds=r.seconds, ended=t0 + r.seconds)

        thread = threading.Thread(target=prune)
        loaded = drain(target, args.drain, args.workers, args.concurrency, "b", during=thread)
        loaded["prune_running"] = thread.is_alive()
        log(f"drain while pruning: {loaded['jobs_s']:,.0f} jobs/s, claim p95 "
            f"{loaded['claim_p95_ms']:.1f} ms; waiting for the prune to end")
        # A long prune (millions of rows): drain again every `during_gap` seconds while it
        # lasts, up to `during_repeats` drains in all, so the figure is not only its start.
        later: list[dict[str, Any]] = []
        for k in range(1, getattr(args, "during_repeats", 1)):
            thread.join(getattr(args, "during_gap", 60.0))
            if not thread.is_alive():
                break
            later.append(drain(target, args.drain, args.workers, args.concurrency, f"b{k}_"))
            later[-1]["prune_running"] = thread.is_alive()
            log(f"drain while pruning ({k + 1}): {later[-1]['jobs_s']:,.0f} jobs/s, claim p95 "
                f"{later[-1]['claim_p95_ms']:.1f} ms")
        thread.join()
        log(f"pruned {pruned['jobs']:,} jobs + {pruned['attempts']:,} attempts in "
            f"{pruned['seconds']:.1f} s")
        after = sizes(db)
        with db.read() as conn:
            left = conn.execute(select(func.count()).select_from(jobs_t)
                                .where(jobs_t.c.finished_at < seeded_at - 1)).scalar()
    finally:
        db.dispose()
    rows_pruned = pruned["jobs"] + pruned["attempts"]
    return {
        "system": name, "seeded": rows, "seeded_attempts": seeded_attempts,
        "seed_s": seconds, "base": base, "loaded": loaded, "later": later, "pruned": pruned,
        "rows_per_s": rows_pruned / pruned["seconds"] if pruned["seconds"] else float("nan"),
        "prune_outlasted_drain": pruned["ended"] >= loaded["ended"],
        "left": left, "before": before, "after": after,
    }


def report(results: list[dict[str, Any]]) -> str:
    def mb(d: dict[str, float]) -> str:
        return " + ".join(f"{k} {v:,.1f}" for k, v in d.items())

    lines = ["| | " + " | ".join(r["system"] for r in results) + " |",
             "|---|" + "--:|" * len(results)]

    def row(label: str, fn: Any) -> None:
        lines.append(f"| {label} | " + " | ".join(fn(r) for r in results) + " |")

    row("seeded finished jobs / attempts", lambda r: f"{r['seeded']:,} / {r['seeded_attempts']:,}")
    row("drain alone (jobs/s)", lambda r: f"{r['base']['jobs_s']:,.0f}")
    row("drain while pruning (jobs/s)", lambda r: f"{r['loaded']['jobs_s']:,.0f}")
    row("drain ratio (pruning / alone)",
        lambda r: f"{r['loaded']['jobs_s'] / r['base']['jobs_s']:.2f}")
    row("claim p95 alone / pruning (ms)",
        lambda r: f"{r['base']['claim_p95_ms']:.2f} / {r['loaded']['claim_p95_ms']:.2f}")
    row("claim p95 ratio",
        lambda r: f"{r['loaded']['claim_p95_ms'] / r['base']['claim_p95_ms']:.2f}")
    row("pruned jobs + attempts",
        lambda r: f"{r['pruned']['jobs']:,} + {r['pruned']['attempts']:,}")
    row("prune time (s), batches",
        lambda r: f"{r['pruned']['seconds']:.1f}, {r['pruned']['batches']}")
    row("rows pruned per second", lambda r: f"{r['rows_per_s']:,.0f}")
    row("prune still running when the drain ended",
        lambda r: "yes" if r["prune_outlasted_drain"] else "no")
    row("seeded jobs left", lambda r: f"{r['left']:,}")
    row("size before (MB)", lambda r: mb(r["before"]))
    row("size after (MB)", lambda r: mb(r["after"]))
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.prune", description=__doc__.split("\n")[0])
    p.add_argument("-n", "--rows", type=int, default=50_000, help="finished jobs seeded")
    p.add_argument("--drain", type=int, default=20_000, help="fresh jobs drained per phase")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--systems", default="sqlite,postgresql")
    args = p.parse_args()
    os.environ["SYNCBRIDGE_PRUNE_INTERVAL_SECONDS"] = "0"  # the workers' own pruners: off
    from core import logging as sblog

    sblog.configure(level="warning", quiet=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for system in args.systems.split(","):
            if system == "sqlite":
                with fresh_sqlite(Path(tmp), "prune") as path:
                    results.append(run_system("SQLite", str(path), args.rows, args))
            else:
                with fresh_pg("prune") as dsn:
                    results.append(run_system("PostgreSQL", dsn, args.rows, args))
            print(f"{results[-1]['system']}: done", flush=True)
    print(f"\n`python -m bench.prune -n {args.rows} --drain {args.drain} --workers "
          f"{args.workers} --concurrency {args.concurrency}`\n")
    print(report(results))


if __name__ == "__main__":
    main()
