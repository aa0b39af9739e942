"""An app that registers on the default registry (`--app tests.apps.default_app`, no ATTR)."""

from __future__ import annotations

from core.handlers import JobContext, job_type


@job_type("default_echo", max_attempts=7)
async def default_echo(ctx: JobContext) -> dict[str, str]:
    return {"entity": ctx.entity_id}
