"""A real worker process for the upstream-protection scenarios: core's Worker with an app
of two job types, `alpha` and `beta`, each declaring its own named upstream (issue 10's
`registry.upstream` / `upstreams=(...)`) and calling it through `ctx.upstream(name)`:
`GET /{name}/items/{id}` on the mock upstream over loopback HTTP. Settings come from
SYNCBRIDGE_* as for `syncbridge --worker-only`; the mock's base URL from
SYNCBRIDGE_TEST_UPSTREAM.

    python -m tests.reliability._protect_worker [--until-empty] [--concurrency N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any
from urllib.parse import quote

from core import logging as sblog
from core.config import load_settings
from core.handlers import JobContext, Registry
from core.integrations.http import request_json
from core.runtime import open_database
from core.shutdown import stop_on_signals
from core.worker import Worker

UPSTREAMS = {"alpha": ("alpha",), "beta": ("beta",)}


def make_registry(base: str) -> Registry:
    reg = Registry()
    for name in UPSTREAMS:
        reg.upstream(name, url=f"{base.rstrip('/')}/{name}")

        async def handler(ctx: JobContext, name: str = name) -> dict[str, Any]:
            got = await request_json(ctx.upstream(name), "GET",
                                     f"/items/{quote(ctx.entity_id, safe='')}", what=name)
            return {"id": got["id"]}

        reg.register(name, handler, upstreams=(name,))
    return reg


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--until-empty", action="store_true")
    p.add_argument("--concurrency", type=int, default=None)
    args = p.parse_args()
    settings = load_settings(concurrency=args.concurrency)
    sblog.configure(level=settings.log_level, log_file=settings.log_file)
    db = open_database(settings)
    worker = Worker(db, settings, registry=make_registry(os.environ["SYNCBRIDGE_TEST_UPSTREAM"]))
    stop_on_signals(worker)
    asyncio.run(worker.run(until_empty=args.until_empty))


if __name__ == "__main__":
    main()
