"""Migration 0008 (upstream protection) up and down on both databases: the shared
`sync_upstreams` table, and audit rows that name an upstream instead of a job."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError

from core.db import Database
from core.models import audit_t
from tests.test_migrations import _migrate, empty_db  # noqa: F401 - the fixture

TABLE = "sync_upstreams"


def test_0008_creates_and_drops_the_upstreams_table(empty_db: Database) -> None:  # noqa: F811
    db = empty_db
    _migrate(db, "upgrade", "0007")
    assert TABLE not in inspect(db.engine).get_table_names()
    with db.write() as conn:  # an audit row of 0007's schema survives the table rebuild
        conn.execute(audit_t.insert().values(at=1.0, actor="a", action="retry", job_id=7))
    _migrate(db, "upgrade", "0008")
    insp = inspect(db.engine)
    assert insp.get_pk_constraint(TABLE)["constrained_columns"] == ["name"]
    assert {"state", "paused_until", "probe_owner", "probe_expires_at", "tokens",
            "tokens_at", "rate", "job_types"} <= {c["name"] for c in insp.get_columns(TABLE)}
    with db.write() as conn:
        conn.execute(audit_t.insert().values(at=2.0, actor="a", action="upstream.pause",
                                             job_id=None, upstream="crm"))
    with db.read() as conn:
        rows = conn.execute(select(audit_t.c.job_id, audit_t.c.upstream)
                            .order_by(audit_t.c.id)).all()
    assert [tuple(r) for r in rows] == [(7, None), (None, "crm")]
    _migrate(db, "downgrade", "0007")
    assert TABLE not in inspect(db.engine).get_table_names()
    with db.read() as conn:  # the upstream's audit row went with the column
        assert conn.execute(select(audit_t.c.job_id)).scalars().all() == [7]
    with pytest.raises(IntegrityError), db.write() as conn:  # job_id is required again
        conn.exec_driver_sql("INSERT INTO sync_audit_events (at, actor, action, job_id) "
                             "VALUES (3.0, 'a', 'x', NULL)")
