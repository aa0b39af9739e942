"""The demo scenarios, enqueued (`syncbridge demo`, and the console's first run on an empty
database). Textual-free: the command line and the console both use it."""

from __future__ import annotations

from core import enqueue
from core.config import Settings
from core.db import Database
from core.demo import registry
from core.integrations.mock import SCENARIOS


def seed_demo(db: Database, settings: Settings) -> list[tuple[str, str, int, bool]]:
    """Enqueue every scenario (idempotent): (job type, entity id, job id, created)."""
    out = []
    for job_type, entity, _expected, _what in SCENARIOS:
        r = enqueue.enqueue(db, job_type, entity, known_types=registry.names(),
                            max_attempts=registry.max_attempts(job_type, settings))
        out.append((job_type, entity, r.job_id, r.created))
    return out
