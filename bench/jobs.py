"""The benchmark's job types, registered through the public registry exactly as a user
registers their own (`Registry.job_type` is the same decorator as `core.handlers.job_type`).

A private `Registry` keeps the bench types out of the default one the console and CLI use;
a user who wants theirs everywhere decorates with `core.handlers.job_type` instead.
"""

from __future__ import annotations

import time
from typing import Any

from core.handlers import JobContext, Registry
from core.integrations.errors import UpstreamTimeout

registry = Registry()
NOOP = "bench_noop"
FAIL_ONCE = "bench_fail_once"
PROBE = "bench_probe"

# Latency samples of the probe job: seconds from the enqueue call to the handler's start.
latencies: list[float] = []


@registry.job_type(NOOP)
async def noop(ctx: JobContext) -> dict[str, Any] | None:
    return None


@registry.job_type(FAIL_ONCE)
async def fail_once(ctx: JobContext) -> dict[str, Any] | None:
    if ctx.attempt == 1:  # the lease token is the attempt's ordinal number
        raise UpstreamTimeout("bench: first attempt fails on purpose")
    return None


@registry.job_type(PROBE)
async def probe(ctx: JobContext) -> dict[str, Any] | None:
    latencies.append(time.time() - ctx.payload["t"])  # type: ignore[index]
    return None
