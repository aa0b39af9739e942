"""Alembic migrations. `upgrade(db)` brings a database to the newest schema."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text

from core.db import Database, wrap_errors

if TYPE_CHECKING:
    from alembic.config import Config

_HERE = Path(__file__).parent
_ADVISORY_LOCK = 7_412_001  # any constant; serialises concurrent upgrades on PostgreSQL
_REVISION = re.compile(r"""^revision = ['"](\w+)['"]$""", re.M)
_DOWN_REVISION = re.compile(r"""^down_revision = (?:None|['"](\w+)['"])$""", re.M)


def alembic_config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    return cfg


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(db: Database) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with db.read() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(db: Database) -> bool:
    """Upgrade to head; returns True when anything ran. Safe to call from many processes."""
    # Every command opens the database through here: a database already at head is
    # recognised without importing Alembic, which costs more than the command itself.
    scripted = _scripted_head()
    if scripted is not None and _stamped_revision(db) == scripted:
        return False
    from alembic import command
    from alembic.runtime.migration import MigrationContext

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


def _scripted_head() -> str | None:
    """The head as the revision scripts spell it, read as text; None unless the history is
    one plain line of scripts (then Alembic decides)."""
    revisions: set[str] = set()
    downs: set[str] = set()
    for path in (_HERE / "versions").glob("*.py"):
        source = path.read_text(encoding="utf-8")
        revision, down = _REVISION.findall(source), _DOWN_REVISION.findall(source)
        if len(revision) != 1 or len(down) != 1 or revision[0] in revisions:
            return None
        revisions.add(revision[0])
        if down[0]:
            downs.add(down[0])
    heads = revisions - downs
    return heads.pop() if len(heads) == 1 and downs <= revisions else None


def _stamped_revision(db: Database) -> str | None:
    """The one revision in Alembic's version table (None: no table, or not one row)."""
    with db.read() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return rows[0] if len(rows) == 1 else None
