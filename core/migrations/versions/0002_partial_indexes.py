"""partial indexes where most rows have NULL

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Every claim and completion is a non-HOT update on PostgreSQL (status is indexed), so each
one writes a new entry into every index whose predicate the row satisfies. Replay links
and finish times are NULL for most of a job's life: partial indexes skip those writes and
serve the same queries (which all ask for non-NULL values).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_PARTIAL = [
    ("sync_jobs", "ix_sync_jobs_replay_of", "replay_of_job_id"),
    ("sync_jobs", "ix_sync_jobs_finished_at", "finished_at"),
    ("sync_job_attempts", "ix_attempts_finished_at", "finished_at"),
]


def upgrade() -> None:
    # Plain index DDL (no batch mode): SQLite drops and creates indexes in place, so a big
    # table is not copied.
    for table, name, column in _PARTIAL:
        where = sa.text(f"{column} IS NOT NULL")
        op.drop_index(name, table_name=table)
        op.create_index(name, table, [column], sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    for table, name, column in _PARTIAL:
        op.drop_index(name, table_name=table)
        op.create_index(name, table, [column])
