"""huey 3 with SqliteHuey (its SQLite storage, WAL), a thread-worker consumer."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

from bench.common import Control, installed

NAME = "huey"
latencies: list[float] = []


def available() -> str:
    return installed("huey")


def make_huey(path: str) -> Any:
    from huey import SqliteHuey

    h = SqliteHuey(filename=path, store_intermediate_errors=False)

    @h.task(name="noop")
    def noop() -> bool:
        return True  # stored in huey's result table: the verification reads it

    @h.task(name="fail_once", retries=1, retry_delay=0, context=True)
    def fail_once(task: Any = None) -> bool:
        if task.retries == 1:  # the first attempt still has its retry left
            raise RuntimeError("bench: first attempt fails")
        return True

    @h.task(name="probe")
    def probe(t: float) -> bool:
        latencies.append(time.time() - t)
        return True

    h.bench_tasks = {"bench_noop": noop, "bench_fail_once": fail_once, "bench_probe": probe}
    return h


def prepare(path: str) -> None:
    make_huey(path).storage.close()


def enqueue(path: str, job_type: str, n: int, prefix: str = "e") -> float:
    h = make_huey(path)
    task = h.bench_tasks[job_type]
    t0 = time.perf_counter()
    for _ in range(n):  # huey has no bulk enqueue
        task()
    elapsed = time.perf_counter() - t0
    h.storage.close()
    return elapsed


def _conn(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def done_probe(path: str, n: int) -> Any:
    conn = _conn(path)
    return (lambda: conn.execute("SELECT count(*) FROM kv").fetchone()[0] >= n, conn.close)


def verify(path: str, job_type: str, n: int, attempts_per_job: int) -> str | None:
    conn = _conn(path)
    try:
        left = conn.execute("SELECT count(*) FROM task").fetchone()[0]
        results = conn.execute("SELECT count(*) FROM kv").fetchone()[0]
    finally:
        conn.close()
    if left or results != n:
        return f"{results}/{n} results stored, {left} tasks left"
    return None


async def worker(cfg: dict[str, Any], ctl: Control) -> dict[str, Any]:
    import logging

    logging.getLogger("huey").setLevel(logging.CRITICAL)  # the fail-once tracebacks
    h = make_huey(cfg["target"])
    consumer = h.create_consumer(workers=cfg.get("workers", 4), worker_type="thread",
                                 periodic=False, initial_delay=cfg.get("poll", 0.1),
                                 max_delay=cfg.get("poll", 0.1), check_worker_health=False)
    ctl.ready()
    await ctl.go.wait()
    consumer.start()
    await ctl.stop.wait()
    await asyncio.to_thread(consumer.stop, graceful=True)
    return {"latencies": latencies}


def enqueue_probe(path: str) -> Any:
    h = make_huey(path)
    probe = h.bench_tasks["bench_probe"]

    def one(i: int) -> None:
        probe(time.time())

    one.close = h.storage.close  # type: ignore[attr-defined]
    return one
