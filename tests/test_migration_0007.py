"""Migration 0007 (slots of recurring schedules) up and down on both databases, as
tests/test_migrations does for the others; its primary key is what makes a slot happen once
across a fleet."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from core.db import Database
from core.migrations import current_revision, head_revision
from core.models import schedule_slots_t
from tests.test_migrations import _migrate, empty_db  # noqa: F401 - the fixture

TABLE = "sync_schedule_slots"


def test_0007_creates_and_drops_the_slots_table(empty_db: Database) -> None:  # noqa: F811
    db = empty_db
    _migrate(db, "upgrade", "0006")
    assert TABLE not in inspect(db.engine).get_table_names()
    _migrate(db, "upgrade", "head")
    assert current_revision(db) == head_revision()
    insp = inspect(db.engine)
    assert insp.get_pk_constraint(TABLE)["constrained_columns"] == ["schedule", "slot_at"]
    assert {c["name"] for c in insp.get_columns(TABLE)} == {
        "schedule", "slot_at", "job_id", "created_at"}
    row = dict(schedule="nightly", slot_at=1.0, job_id=None, created_at=2.0)
    with db.write() as conn:
        conn.execute(schedule_slots_t.insert().values(**row))
    with pytest.raises(IntegrityError), db.write() as conn:
        conn.execute(schedule_slots_t.insert().values(**row))
    _migrate(db, "downgrade", "0006")
    assert TABLE not in inspect(db.engine).get_table_names()
    assert current_revision(db) == "0006"
