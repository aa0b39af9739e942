"""A worker running many jobs at once gets several small connection pools per upstream
(core.integrations.clients.pool_shards), and spreads its jobs over them evenly."""

from __future__ import annotations

import asyncio
import collections
import math
from typing import Any

from core import enqueue as enq
from core.db import Database
from core.handlers import JobContext, Registry
from core.integrations.clients import JOBS_PER_POOL, pool_limits, pool_shards
from core.worker import Worker


def test_pool_sizes() -> None:
    assert pool_shards(1) == pool_shards(JOBS_PER_POOL) == 1
    assert pool_shards(JOBS_PER_POOL + 1) == 2
    assert pool_shards(400) == math.ceil(400 / JOBS_PER_POOL)
    assert pool_limits(2).max_connections == pool_limits(2).max_keepalive_connections == 10
    assert pool_limits(8).max_connections == pool_limits(8).max_keepalive_connections == 16


def test_jobs_are_spread_over_the_pools_least_loaded_first(settings: Any, db: Database
                                                           ) -> None:
    concurrency, n = 20, 20
    shards = pool_shards(concurrency)
    assert shards > 1
    app = Registry()
    app.upstream("crm")  # no URL: the mock, in demo mode
    running: collections.Counter[int] = collections.Counter()
    most: collections.Counter[int] = collections.Counter()
    started = 0
    all_started = asyncio.Event()

    @app.job_type("hold", upstreams=("crm",))
    async def hold(ctx: JobContext) -> None:
        nonlocal started
        client = id(ctx.upstream("crm"))
        running[client] += 1
        most[client] = max(most[client], running[client])
        started += 1
        if started == n:
            all_started.set()
        await asyncio.wait_for(all_started.wait(), 10)  # all n at once
        running[client] -= 1

    enq.enqueue_many(db, "hold", [f"h{i}" for i in range(n)], known_types=app.names(),
                     max_attempts=1)
    worker = Worker(db, settings, registry=app, concurrency=concurrency)
    stats = asyncio.run(worker.run(until_empty=True))
    assert stats.succeeded == n
    assert len(most) == shards  # every pool used
    assert max(most.values()) == math.ceil(concurrency / shards)  # and none over its size
    assert sum(most.values()) == n
