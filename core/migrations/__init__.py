"""Alembic migrations. `upgrade(db)` brings a database to the newest schema."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from core.db import Database, wrap_errors

_HERE = Path(__file__).parent
_ADVISORY_LOCK = 7_412_001  # any constant; serialises concurrent upgrades on PostgreSQL


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(db: Database) -> str | None:
    with db.read() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(db: Database) -> bool:
    """Upgrade to head; returns True when anything ran. Safe to call from many processes."""
    head = head_revision()
    if current_revision(db) == head:
        return False
    cfg = alembic_config()
    with wrap_errors(), db.engine.begin() as conn:
        # On SQLite the begin is IMMEDIATE (see Database), which serialises racing upgrades;
        # on PostgreSQL a transaction-scoped advisory lock does.
        if db.is_postgres:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_LOCK})
        if MigrationContext.configure(conn).get_current_revision() == head:
            return False
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return True
