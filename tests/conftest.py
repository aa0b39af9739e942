"""Fixtures: every engine test runs on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import inspect, text

from core import clock
from core.config import Settings, load_settings
from core.db import Database
from core.migrations import upgrade

PG_ADMIN_DSN = os.environ.get("SYNCBRIDGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
TABLES = ("sync_job_attempts, sync_audit_events, sync_workers, sync_jobs, "
          "sync_schedule_slots, sync_upstreams")


def _pg_url(dbname: str) -> str:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    return f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{dbname}"


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    name = f"syncbridge_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required for these tests ({PG_ADMIN_DSN}): {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _pg_url(name)
    db = Database(url)
    upgrade(db)
    db.dispose()
    yield url
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/syncbridge.db"  # type: ignore[str-bytes-safe]
    url: str = request.getfixturevalue("pg_database")
    db = Database(url)
    with db.write() as conn:
        # A test may have left the schema at an older revision (the fixtures upgrade it
        # again next): truncate the tables that exist.
        present = set(inspect(conn).get_table_names())
        tables = ", ".join(t for t in TABLES.split(", ") if t in present)
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    db.dispose()
    return url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated to head once per session: the `db` fixture copies it
    rather than run every migration again for each test."""
    path = tmp_path_factory.mktemp("template") / "syncbridge.db"
    database = Database(f"sqlite:///{path}")
    upgrade(database)
    database.dispose()
    return path


@pytest.fixture
def db(db_url: str, request: pytest.FixtureRequest) -> Iterator[Database]:
    if db_url.startswith("sqlite:///"):
        target = Path(db_url.removeprefix("sqlite:///"))
        if not target.exists():
            shutil.copyfile(request.getfixturevalue("sqlite_template"), target)
    database = Database(db_url)
    upgrade(database)  # a no-op at head (the copy, or PostgreSQL's session database)
    yield database
    database.dispose()


@pytest.fixture
def settings(db_url: str) -> Settings:
    """Demo semantics with fast backoff so retry scenarios finish in well under a second."""
    return load_settings(database_url=db_url, demo=True, job_backoff_seconds_base=0.01,
                         job_backoff_seconds_cap=0.05, lease_seconds=5, poll_seconds=0.02,
                         shutdown_timeout_seconds=5)


@pytest.fixture(autouse=True)
def _real_clock() -> Iterator[None]:
    yield
    clock.set_clock(None)


# Modules whose every test is slow: the reliability suite (marked below) and the modules
# marked slow as a whole. A run that deselects the slow tests does not import them: the fuzz
# modules' Hypothesis and Schemathesis cost each xdist worker more than collecting the rest.
SLOW_MODULES = ("tests/reliability/", "tests/test_packaging.py",
                "tests/test_example_walkthrough.py", "tests/api/test_fuzz.py",
                "tests/tui/test_fuzz_console.py")
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_ignore_collect(collection_path: os.PathLike[str], config: pytest.Config
                          ) -> bool | None:
    if (config.getoption("markexpr", "") or "").strip() != "not slow":
        return None  # the make targets' spelling; any other selection collects everything
    rel = os.path.relpath(collection_path, _ROOT).replace(os.sep, "/")
    if any(rel == m.rstrip("/") or rel.startswith(m) for m in SLOW_MODULES):
        return True
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The reliability suite is slow as a whole: `make test-fast` skips it by the marker.
    for item in items:
        if "tests/reliability/" in item.nodeid:
            item.add_marker(pytest.mark.slow)
        # SLOW_MODULES go uncollected when slow tests are deselected: all of theirs must be.
        if item.nodeid.startswith(SLOW_MODULES):
            assert item.get_closest_marker("slow"), f"{item.nodeid} is in SLOW_MODULES"
