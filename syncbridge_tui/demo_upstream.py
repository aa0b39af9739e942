"""The demo upstream at human speed, for the console's first run only.

core's in-process mock answers in microseconds, so in a freshly seeded demo every job is
`running` for less than a frame and the operator never sees it. When the console seeds the
demo itself (an empty database, no real CRM/Billing URLs), its embedded worker talks to
this subclass instead, which answers the same replies after 0.2-0.8 s (awaited, so the
worker's other jobs keep going). Nothing else changes: a console on an existing database,
`--worker-only` and the tests all use core's instant mock.
"""

from __future__ import annotations

import asyncio
import random

import httpx

from core.integrations.mock import MockUpstream

DEMO_LATENCY = (0.2, 0.8)


class PacedMockUpstream(MockUpstream):
    def __init__(self, latency: tuple[float, float] = DEMO_LATENCY) -> None:
        super().__init__()
        self.latency = latency

    def transport(self) -> httpx.MockTransport:
        async def handler(request: httpx.Request) -> httpx.Response:
            await asyncio.sleep(random.uniform(*self.latency))
            return self.respond(request)

        return httpx.MockTransport(handler)
