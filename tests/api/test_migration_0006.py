"""Migration 0006 (idempotency keys) up and down on both databases, as tests/test_migrations
does for the others; the key's primary key is what keeps two requests from both running."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from core import clock
from core.api.idempotency import IdempotencyStore, Stored, idempotency_t
from core.db import Database
from core.migrations import current_revision, head_revision
from tests.test_migrations import _migrate, empty_db  # noqa: F401 - the fixture

TABLE = "sync_api_idempotency"


def test_0006_creates_and_drops_the_idempotency_table(empty_db: Database) -> None:  # noqa: F811
    db = empty_db
    _migrate(db, "upgrade", "0005")
    assert TABLE not in inspect(db.engine).get_table_names()
    _migrate(db, "upgrade", "head")
    assert current_revision(db) == head_revision()
    insp = inspect(db.engine)
    assert insp.get_pk_constraint(TABLE)["constrained_columns"] == ["scope", "key"]
    assert {i["name"] for i in insp.get_indexes(TABLE)} == {"ix_sync_api_idempotency_expires"}

    now = clock.now()
    row = dict(scope="ci", key="k1", fingerprint="f" * 64, state="in_progress",
               created_at=now, expires_at=now + 60)
    with db.write() as conn:
        conn.execute(idempotency_t.insert().values(**row))
    with pytest.raises(IntegrityError), db.write() as conn:
        conn.execute(idempotency_t.insert().values(**row))

    store = IdempotencyStore(db, ttl_seconds=60)
    assert store.begin("ci", "k1", "f" * 64) == ("in_progress", None)
    assert store.begin("ci", "k1", "0" * 64) == ("mismatch", None)
    assert store.begin("other", "k1", "f" * 64) == ("new", None)  # scoped by token name
    store.finish("ci", "k1", Stored(201, [(b"location", b"/api/jobs/1")], b"{}"))
    verdict, stored = store.begin("ci", "k1", "f" * 64)
    assert verdict == "replay" and stored is not None
    assert (stored.status_code, stored.headers, stored.body) == (
        201, [(b"location", b"/api/jobs/1")], b"{}")

    _migrate(db, "downgrade", "0005")
    assert TABLE not in inspect(db.engine).get_table_names()
