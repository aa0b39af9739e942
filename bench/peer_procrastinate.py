"""procrastinate (psycopg 3 connector), async tasks, several worker processes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.common import Control, installed, pg_count, pg_empty_probe

NAME = "procrastinate"
ENTRY = {"bench_noop": "noop", "bench_fail_once": "fail_once", "bench_probe": "probe"}
latencies: list[float] = []
counter = [0]


def available() -> str:
    return installed("procrastinate")


def make_app(dsn: str) -> Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="noop")
    async def noop() -> None:
        counter[0] += 1

    @app.task(name="fail_once", pass_context=True,
              retry=procrastinate.RetryStrategy(max_attempts=1, wait=0))
    async def fail_once(context: Any) -> None:
        if context.job.attempts == 0:
            raise RuntimeError("bench: first attempt fails")
        counter[0] += 1

    @app.task(name="probe")
    async def probe(t: float) -> None:
        latencies.append(time.time() - t)

    return app


def prepare(dsn: str) -> None:
    async def go() -> None:
        app = make_app(dsn)
        async with app.open_async():
            await app.schema_manager.apply_schema_async()

    asyncio.run(go())


def enqueue(dsn: str, job_type: str, n: int, prefix: str = "e") -> float:
    async def go() -> float:
        app = make_app(dsn)
        async with app.open_async():
            task = app.tasks[ENTRY[job_type]]
            t0 = time.perf_counter()
            for i in range(0, n, 10_000):
                await task.batch_defer_async(*([{}] * min(10_000, n - i)))
            return time.perf_counter() - t0

    return asyncio.run(go())


def done_probe(dsn: str, n: int = 0) -> Any:
    return pg_empty_probe(dsn, "SELECT EXISTS (SELECT 1 FROM procrastinate_jobs "
                               "WHERE status IN ('todo', 'doing'))")


def verify(dsn: str, job_type: str, n: int, attempts_per_job: int) -> str | None:
    ok = pg_count(dsn, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded' "
                  "AND task_name = %s", ENTRY[job_type])
    return None if ok == n else f"{ok}/{n} jobs succeeded"


async def worker(cfg: dict[str, Any], ctl: Control) -> dict[str, Any]:
    import logging

    logging.getLogger("procrastinate").setLevel(logging.WARNING)
    app = make_app(cfg["target"])
    async with app.open_async():
        ctl.ready()
        await ctl.go.wait()
        task = asyncio.create_task(app.run_worker_async(
            concurrency=cfg.get("concurrency", 4), wait=True,
            fetch_job_polling_interval=cfg.get("poll", 0.1), install_signal_handlers=False))
        await ctl.stop.wait()
        task.cancel()
        try:
            await asyncio.wait_for(task, 30)
        except asyncio.CancelledError:
            pass
    return {"processed": counter[0], "latencies": latencies}


def enqueue_probe(dsn: str) -> Any:
    loop = asyncio.new_event_loop()
    app = make_app(dsn)
    cm = app.open_async()
    loop.run_until_complete(cm.__aenter__())
    task = app.tasks["probe"]

    def one(i: int) -> None:
        loop.run_until_complete(task.defer_async(t=time.time()))

    def close() -> None:
        loop.run_until_complete(cm.__aexit__(None, None, None))
        loop.close()

    one.close = close  # type: ignore[attr-defined]
    return one
