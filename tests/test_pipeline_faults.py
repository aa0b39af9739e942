"""A pipelined statement whose connection dies mid-flight: one clean DatabaseError, no
traceback from a rollback on the dead connection, and the next call works."""

from __future__ import annotations

import logging
import threading

import psycopg
import pytest
from sqlalchemy import text

from core import enqueue, leases
from core.db import Database, DatabaseError
from tests.conftest import PG_ADMIN_DSN
from tests.helpers import wait_for

TYPES = ["customer"]


def _kill(pid: int) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def _kill_when_sleeping(pid: int) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        wait_for(lambda: admin.execute(
            "SELECT query FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()[0].startswith("SELECT pg_sleep"), timeout=10,
            message="the pipeline to be in flight")
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


@pytest.mark.parametrize("when", ["before", "in_flight"])
@pytest.mark.parametrize("call", ["claim", "enqueue"])
def test_pipeline_on_a_killed_connection(db_url: str, call: str, when: str, caplog, capfd,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("pipelines are PostgreSQL's")
    if when == "in_flight" and call == "enqueue":
        pytest.skip("only the claim's pipeline has a statement to stretch")
    db = Database(db_url)
    try:
        enqueue.enqueue(db, "customer", "c_1", known_types=TYPES, max_attempts=4)
        caplog.set_level(logging.DEBUG, logger="sqlalchemy")
        killer = None
        with pytest.raises(DatabaseError), db.write() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
            if when == "before":
                _kill(pid)
            else:  # the server goes while the pipeline waits for its answers
                monkeypatch.setattr(leases, "_PG_CLAIM_PLAN",
                                    (*leases._PG_CLAIM_PLAN, "SELECT pg_sleep(5)"))
                killer = threading.Thread(target=_kill_when_sleeping, args=(pid,))
                killer.start()
            if call == "claim":
                leases.claim_rows(conn, True, "w1", 10, 0.0, 30.0, TYPES)
            else:
                enqueue.insert_jobs(conn, True, "customer", [["c_2"]], [["corr"]], None, 4, 0.0)
        if killer is not None:
            killer.join(10)
        out, err = capfd.readouterr()
        assert "Traceback" not in err + out
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
        # The pool hands out a live connection next time.
        assert [j.entity_id for j in leases.claim(db, "w1", 10, lease_seconds=30,
                                                 job_types=TYPES)] == ["c_1"]
    finally:
        db.dispose()
