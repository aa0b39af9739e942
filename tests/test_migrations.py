"""Migrations move existing data: a database at 0002 with an attempt in flight upgrades to
the attempts-written-once schema (0003) and keeps working, on both databases."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic import command
from sqlalchemy import func, inspect, select, text

from core import clock, completion, enqueue, leases, reads
from core.db import Database
from core.migrations import (
    _scripted_head,
    _stamped_revision,
    alembic_config,
    current_revision,
    head_revision,
    upgrade,
)
from core.models import attempts_t
from core.records import Completion
from tests.conftest import PG_ADMIN_DSN, _pg_url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path}/old.db")
        yield db
        db.dispose()
        return
    name = f"syncbridge_mig_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    db = Database(_pg_url(name))
    try:
        yield db
    finally:
        db.dispose()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _migrate(db: Database, verb: str, revision: str) -> None:
    cfg = alembic_config()
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, verb)(cfg, revision)


def test_upgrade_from_0002_keeps_the_attempt_in_flight(empty_db: Database) -> None:
    db = empty_db
    _migrate(db, "upgrade", "0002")
    now = clock.now()
    with db.write() as conn:
        # What a 0002-era claim left behind: a running job and its open attempt row.
        conn.execute(text(
            "INSERT INTO sync_jobs (job_type, entity_id, status, correlation_id, "
            "attempt_count, max_attempts, next_run_at, lease_owner, lease_token, "
            "lease_acquired_at, lease_expires_at, is_replay, created_at, updated_at) "
            "VALUES ('customer', 'c_1', 'running', 'corr', 1, 4, :now, 'w1', 1, :now, "
            ":later, false, :now, :now)"), {"now": now, "later": now + 30})
        conn.execute(text(
            "INSERT INTO sync_job_attempts (job_id, number, worker_id, started_at, outcome) "
            "VALUES (1, 1, 'w1', :now, 'running')"), {"now": now})

    _migrate(db, "upgrade", "head")
    assert current_revision(db) == head_revision()
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(attempts_t)).scalar() == 0
    # The attempt is still shown, from the lease ...
    [attempt] = reads.attempts_for(db, 1)
    assert (attempt.number, attempt.worker_id, attempt.outcome) == (1, "w1", "running")
    assert attempt.started_at == now
    # ... and the old worker's lease can still be completed: its row is written once.
    done = Completion(job_id=1, lease_token=1, worker_id="w1", outcome="success",
                      started_at=now, finished_at=now + 1, duration_ms=1000.0, result={})
    assert completion.complete(db, [done]) == [True]
    [attempt] = reads.attempts_for(db, 1)
    assert (attempt.outcome, attempt.duration_ms) == ("success", 1000.0)


def test_downgrade_to_0002_restores_open_attempt_rows(empty_db: Database) -> None:
    db = empty_db
    _migrate(db, "upgrade", "head")
    enqueue.enqueue(db, "customer", "c_1", known_types=["customer"], max_attempts=4)
    [claimed] = leases.claim(db, "w1", 1, lease_seconds=30, job_types=["customer"])
    _migrate(db, "downgrade", "0002")
    with db.read() as conn:
        rows = conn.execute(select(attempts_t.c.job_id, attempts_t.c.number,
                                   attempts_t.c.worker_id, attempts_t.c.outcome)).all()
    assert [tuple(r) for r in rows] == [(claimed.id, 1, "w1", "running")]


def test_head_schema_has_no_attempt_fk_and_byte_order_keys(empty_db: Database) -> None:
    db = empty_db
    _migrate(db, "upgrade", "head")
    insp = inspect(db.engine)
    assert insp.get_foreign_keys("sync_job_attempts") == []
    assert "ix_sync_jobs_lease" not in {i["name"] for i in insp.get_indexes("sync_jobs")}
    if db.is_postgres:
        collations = {c["name"]: getattr(c["type"], "collation", None)
                      for c in insp.get_columns("sync_jobs")}
        assert {k: collations[k] for k in ("job_type", "entity_id", "status",
                                           "correlation_id")} == dict.fromkeys(
            ("job_type", "entity_id", "status", "correlation_id"), "C")
    # And back: 0002 had the foreign key.
    _migrate(db, "downgrade", "0002")
    assert [fk["referred_table"] for fk in inspect(db.engine).get_foreign_keys(
        "sync_job_attempts")] == ["sync_jobs"]


def test_the_fast_head_check_agrees_with_alembic(empty_db: Database) -> None:
    """upgrade() skips Alembic when the scripts' head, read as text, is the stamped one."""
    assert _scripted_head() == head_revision() is not None
    assert _stamped_revision(empty_db) is None
    _migrate(empty_db, "upgrade", "0002")
    assert _stamped_revision(empty_db) == "0002"
    assert upgrade(empty_db) is True
    assert _stamped_revision(empty_db) == current_revision(empty_db) == head_revision()
    assert upgrade(empty_db) is False
