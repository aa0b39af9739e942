"""Job types for the console's embedded-worker tests. The worker runs in a child process
that unpickles its registry by reference, so these live in a module that imports only
core (importing a test module would load Textual into the child)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from core.demo import registry
from core.handlers import JobContext

slow_registry = registry.copy()


@slow_registry.job_type("slow")
async def slow(ctx: JobContext) -> dict[str, str]:
    """Runs for a minute unless stopped; with payload {"marker": path} it writes "canceled"
    there when it is stopped, so a test in another process can see the handler end."""
    marker = ctx.payload.get("marker") if isinstance(ctx.payload, dict) else None
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        if marker:
            Path(marker).write_text("canceled")
        raise
    return {"never": "reached"}
