"""A user's app as `--app tests.apps.sbtestapp[:registry]` loads it: its own registry, an
upstream with its URL and token from the environment, and a policy per job type."""

from __future__ import annotations

import asyncio
from typing import Any

from core.handlers import JobContext, Registry
from core.integrations.errors import RetryLater
from core.integrations.http import request_json

registry = Registry()
registry.upstream("ledger", url_env="SBTEST_LEDGER_URL", timeout=5,
                  headers={"Authorization": "Bearer ${SBTEST_LEDGER_TOKEN}",
                           "X-Static": "static-secret-value"})


class Flaky(Exception):
    """Not a SyncError: retried only because `flaky` lists it in retry_on."""


@registry.job_type("echo")
async def echo(ctx: JobContext) -> dict[str, Any]:
    return {"entity": ctx.entity_id, "payload": ctx.payload, "attempt": ctx.attempt}


@registry.job_type("hang", max_attempts=2, timeout=0.3, backoff_base=0, backoff_cap=0)
async def hang(ctx: JobContext) -> None:
    await asyncio.sleep(3600)


@registry.job_type("later", max_attempts=3, backoff_base=0, backoff_cap=0)
async def later(ctx: JobContext) -> dict[str, int]:
    if ctx.attempt == 1:
        raise RetryLater("not yet", retry_in=1.5)
    return {"attempt": ctx.attempt}


@registry.job_type("flaky", max_attempts=3, retry_on=(Flaky,), backoff_base=0.05,
                   backoff_cap=0.05)
async def flaky(ctx: JobContext) -> None:
    raise Flaky(f"attempt {ctx.attempt} failed")


@registry.job_type("ledger", upstreams=("ledger",))
async def post_ledger(ctx: JobContext) -> Any:
    return await request_json(ctx.upstream("ledger"), "POST", f"/entries/{ctx.entity_id}",
                              what="Ledger", json_body={"payload": ctx.payload})


def make_registry() -> Registry:
    return registry


not_a_registry = 42
