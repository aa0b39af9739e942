"""pgqueuer (asyncpg driver): batch dequeue with its own completion log buffer."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from bench.common import Control, installed, pg_count, pg_empty_probe

NAME = "pgqueuer"
ENTRY = {"bench_noop": "noop", "bench_fail_once": "fail_once", "bench_probe": "probe"}


def available() -> str:
    return installed("pgqueuer", "asyncpg")


async def _conn(dsn: str) -> Any:
    import asyncpg

    return await asyncpg.connect(dsn)


def prepare(dsn: str) -> None:
    async def go() -> None:
        from pgqueuer import AsyncpgDriver, Queries

        conn = await _conn(dsn)
        await Queries(AsyncpgDriver(conn)).install()
        await conn.close()

    asyncio.run(go())


def enqueue(dsn: str, job_type: str, n: int, prefix: str = "e") -> float:
    async def go() -> float:
        from pgqueuer import AsyncpgDriver, Queries

        conn = await _conn(dsn)
        q = Queries(AsyncpgDriver(conn))
        t0 = time.perf_counter()
        for i in range(0, n, 10_000):  # its batch API takes lists
            k = min(10_000, n - i)
            await q.enqueue([ENTRY[job_type]] * k, [None] * k, [0] * k)
        elapsed = time.perf_counter() - t0
        await conn.close()
        return elapsed

    return asyncio.run(go())


def done_probe(dsn: str, n: int = 0) -> Any:
    # A finished job leaves the queue table (its log row stays in pgqueuer_log).
    return pg_empty_probe(dsn, "SELECT EXISTS (SELECT 1 FROM pgqueuer)")


def verify(dsn: str, job_type: str, n: int, attempts_per_job: int) -> str | None:
    ok = pg_count(dsn, "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful' "
                  "AND entrypoint = %s", ENTRY[job_type])
    return None if ok == n else f"{ok}/{n} jobs logged successful"


async def worker(cfg: dict[str, Any], ctl: Control) -> dict[str, Any]:
    import logging

    from pgqueuer import AsyncpgDriver, Queries, QueueManager, RetryRequested

    logging.getLogger("pgqueuer").setLevel(logging.WARNING)

    conn = await _conn(cfg["target"])
    qm = QueueManager(Queries(AsyncpgDriver(conn)))
    latencies: list[float] = []
    done = 0

    @qm.entrypoint("noop")
    async def noop(job: Any) -> None:
        nonlocal done
        done += 1

    @qm.entrypoint("fail_once")
    async def fail_once(job: Any) -> None:
        nonlocal done
        if job.attempts == 0:
            raise RetryRequested(delay=timedelta(0), reason="bench: first attempt fails")
        done += 1

    @qm.entrypoint("probe")
    async def probe(job: Any) -> None:
        latencies.append(time.time() - float(job.payload.decode()))

    ctl.ready()
    await ctl.go.wait()
    task = asyncio.create_task(qm.run(batch_size=cfg.get("batch", 200),
                                      dequeue_timeout=timedelta(seconds=cfg.get("poll", 1.0))))
    await ctl.stop.wait()
    qm.shutdown.set()
    await asyncio.wait_for(task, 30)
    return {"processed": done, "latencies": latencies}


def enqueue_probe(dsn: str) -> Any:
    from pgqueuer import AsyncpgDriver, Queries

    loop = asyncio.new_event_loop()
    conn = loop.run_until_complete(_conn(dsn))
    q = Queries(AsyncpgDriver(conn))

    def one(i: int) -> None:
        loop.run_until_complete(q.enqueue("probe", str(time.time()).encode()))

    def close() -> None:
        loop.run_until_complete(conn.close())
        loop.close()

    one.close = close  # type: ignore[attr-defined]
    return one
