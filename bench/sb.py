"""SyncBridge under the benchmark: bulk enqueue through `core.enqueue.enqueue_many`, workers
through `core.worker.Worker` with the bench job types of `bench.jobs` (public registry)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from bench import jobs
from bench.common import Control

NAME = "SyncBridge"


def sa_url(target: str) -> str:
    """`target` is a libpq DSN (postgresql://...) or a SQLite file path."""
    if target.startswith("postgresql://"):
        return target.replace("postgresql://", "postgresql+psycopg://", 1)
    return f"sqlite:///{target}"


def _open(target: str) -> Any:
    from core.db import Database
    from core.migrations import upgrade

    db = Database(sa_url(target))
    upgrade(db)
    return db


def prepare(target: str) -> None:
    _open(target).dispose()


def enqueue(target: str, job_type: str, n: int, prefix: str = "e") -> float:
    """Enqueue n jobs of one type in bulk; returns the seconds the enqueue call took."""
    import core.enqueue

    db = _open(target)
    ids = [f"{prefix}{i}" for i in range(n)]
    known = [*jobs.registry.names(), *jobs.upstream_app.names(), "customer"]
    try:
        t0 = time.perf_counter()
        res = core.enqueue.enqueue_many(db, job_type, ids, known_types=known, max_attempts=4)
        elapsed = time.perf_counter() - t0
    finally:
        db.dispose()
    assert len(res) == n and all(r.created for r in res)
    return elapsed


def _raw(target: str) -> Any:
    if target.startswith("postgresql://"):
        import psycopg

        return psycopg.connect(target, autocommit=True)
    conn = sqlite3.connect(target, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def done_probe(target: str, n: int = 0) -> tuple[Callable[[], bool], Callable[[], None]]:
    """A cheap check on SyncBridge's own table: no job is pending or running."""
    conn = _raw(target)
    sql = "SELECT EXISTS (SELECT 1 FROM sync_jobs WHERE status IN ('pending', 'running'))"

    def done() -> bool:
        return not conn.execute(sql).fetchone()[0]

    return done, conn.close


def verify(target: str, job_type: str, n: int, attempts_per_job: int) -> str | None:
    """None when every job succeeded with exactly the expected attempt records."""
    conn = _raw(target)
    try:
        ok = conn.execute(
            "SELECT count(*) FROM sync_jobs WHERE job_type = ? AND status = 'success'"
            .replace("?", "%s" if not isinstance(conn, sqlite3.Connection) else "?"),
            (job_type,)).fetchone()[0]
        att = conn.execute("SELECT count(*), sum(CASE WHEN outcome = 'success' THEN 1 ELSE 0 END)"
                           " FROM sync_job_attempts").fetchone()
    finally:
        conn.close()
    if ok != n:
        return f"{ok}/{n} jobs succeeded"
    if att[0] != n * attempts_per_job or att[1] != n:
        return f"{att[0]} attempts ({att[1]} successful) for {n} jobs"
    return None


async def worker(cfg: dict[str, Any], ctl: Control) -> dict[str, Any]:
    from core.config import load_settings
    from core.logging import configure
    from core.worker import Worker

    configure(level=cfg.get("log_level", "warning"), quiet=True)
    upstream_url = cfg.get("upstream_url")  # bench/concurrency.py: the latency server
    settings = load_settings(
        database_url=sa_url(cfg["target"]), concurrency=cfg["concurrency"],
        poll_seconds=cfg.get("poll", 0.2), job_backoff_seconds_base=0.0,
        job_backoff_seconds_cap=0.0, lease_seconds=30, demo=bool(cfg.get("customer")),
        upstreams={n: {"url": upstream_url} for n in ("bench_crm", "bench_billing")}
        if upstream_url else None)
    db = _open(cfg["target"])
    registry = jobs.registry
    if cfg.get("customer"):  # the built-in customer job, against the in-process mock
        from core.demo import registry as builtin

        registry = builtin
    elif upstream_url:
        registry = jobs.upstream_app
    w = Worker(db, settings, registry=registry, start_paused=True)
    stats = await run_on_cue(w, ctl)
    db.dispose()
    return {"processed": stats.processed, "latencies": jobs.latencies}


async def run_on_cue(w: Any, ctl: Control) -> Any:
    """Start a worker paused, say ready once it is, drain from "go" to "stop"; its stats."""
    task = asyncio.create_task(w.run())
    while w.state != "paused":
        await asyncio.sleep(0.01)
        if task.done():
            await task
    ctl.ready()
    await ctl.go.wait()
    w.resume()
    await ctl.stop.wait()
    w.request_stop()
    return await task


def enqueue_probe(target: str) -> Callable[[int], None]:
    """One probe job per call, its payload carrying the enqueue time."""
    import core.enqueue

    db = _open(target)
    names = jobs.registry.names()

    def one(i: int) -> None:
        core.enqueue.enqueue(db, jobs.PROBE, f"p{i}", known_types=names, max_attempts=4,
                      payload={"t": time.time()})

    return one
