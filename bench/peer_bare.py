"""Reference loops with no queue library: a two-column jobs table, claims of 100 at a time
(`FOR UPDATE SKIP LOCKED` on PostgreSQL through psycopg; `BEGIN IMMEDIATE` on SQLite WAL),
each batch marked done in one statement. No attempts, no fencing, no handler: the floor."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

from bench.common import Control

BATCH = 100


def _is_pg(target: str) -> bool:
    return target.startswith("postgresql://")


def _conn(target: str) -> Any:
    if _is_pg(target):
        import psycopg

        return psycopg.connect(target, autocommit=True)
    conn = sqlite3.connect(target, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def prepare(target: str) -> None:
    conn = _conn(target)
    pk = "bigserial" if _is_pg(target) else "integer"
    conn.execute(f"CREATE TABLE jobs (id {pk} PRIMARY KEY, status text NOT NULL)")
    conn.execute("CREATE INDEX jobs_todo ON jobs (id) WHERE status = 'todo'")
    conn.close()


def enqueue(target: str, job_type: str, n: int, prefix: str = "e") -> float:
    conn = _conn(target)
    t0 = time.perf_counter()
    if _is_pg(target):
        conn.execute("INSERT INTO jobs (status) SELECT 'todo' FROM generate_series(1, %s)", (n,))
    else:
        conn.executemany("INSERT INTO jobs (status) VALUES ('todo')", [()] * n)
    elapsed = time.perf_counter() - t0
    if _is_pg(target):
        # Statistics for the claim's plan (outside the enqueue's clock): without them the
        # planner sorts every pending row for each claim of 100 and the floor is no floor.
        conn.execute("ANALYZE jobs")
    conn.close()
    return elapsed


def done_probe(target: str, n: int = 0) -> Any:
    conn = _conn(target)
    sql = "SELECT EXISTS (SELECT 1 FROM jobs WHERE status <> 'done')"
    return (lambda: not conn.execute(sql).fetchone()[0], conn.close)


def verify(target: str, job_type: str, n: int, attempts_per_job: int) -> str | None:
    conn = _conn(target)
    ok = conn.execute("SELECT count(*) FROM jobs WHERE status = 'done'").fetchone()[0]
    conn.close()
    return None if ok == n else f"{ok}/{n} done"


def _loop(target: str, stop: Any) -> int:
    conn = _conn(target)
    n = 0
    pg = _is_pg(target)
    claim = (
        "UPDATE jobs SET status = 'doing' WHERE id IN (SELECT id FROM jobs WHERE status = "
        "'todo' ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED) RETURNING id" if pg else
        "UPDATE jobs SET status = 'doing' WHERE id IN (SELECT id FROM jobs WHERE status = "
        "'todo' ORDER BY id LIMIT 100) RETURNING id")
    finish = ("UPDATE jobs SET status = 'done' WHERE id = ANY(%s)" if pg else
              "UPDATE jobs SET status = 'done' WHERE id = ?")
    while not stop.is_set():
        if pg:
            ids = [r[0] for r in conn.execute(claim).fetchall()]
            if ids:
                conn.execute(finish, (ids,))
        else:
            conn.execute("BEGIN IMMEDIATE")
            ids = [r[0] for r in conn.execute(claim).fetchall()]
            conn.execute("COMMIT")
            if ids:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(finish, [(i,) for i in ids])
                conn.execute("COMMIT")
        if not ids:
            time.sleep(0.01)
        n += len(ids)
    conn.close()
    return n


async def worker(cfg: dict[str, Any], ctl: Control) -> dict[str, Any]:
    import threading

    stop = threading.Event()
    ctl.ready()
    await ctl.go.wait()
    fut = asyncio.get_running_loop().run_in_executor(None, _loop, cfg["target"], stop)
    await ctl.stop.wait()
    stop.set()
    return {"processed": await fut}
