"""Opening the engine: settings -> a reachable database at the newest schema."""

from __future__ import annotations

from core.config import Settings
from core.db import MAX_POOL_SIZE, MIN_POOL_SIZE, Database, DatabaseError
from core.migrations import upgrade


def open_database(settings: Settings, *, migrate: bool = True) -> Database:
    """Connect, check the connection, and upgrade the schema (raises DatabaseError)."""
    pool_size = max(MIN_POOL_SIZE, min(MAX_POOL_SIZE, settings.concurrency))
    db = Database(settings.database_url, pool_size=pool_size)
    try:
        db.ping()
        if migrate:
            upgrade(db)
    except DatabaseError:
        db.dispose()
        raise
    except Exception as exc:  # a migration that cannot run is a database problem to the user
        db.dispose()
        raise DatabaseError(f"cannot prepare database {db.display_url}: {exc}") from exc
    return db
