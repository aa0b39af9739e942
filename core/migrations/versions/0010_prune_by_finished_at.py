"""retention walks the finished_at index: one index fewer on every finished job

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02

0009 added `ix_sync_jobs_status_finished (status, finished_at)` so that the pruner could
find one status's oldest jobs without walking past the other statuses' rows. It cost an
index entry on every completion, the queue's hottest write, to speed up a background
task. The pruner now walks `ix_sync_jobs_finished_at` instead, with a cursor per rule
(core.retention): rows of other statuses older than the cut-off are stepped over once per
run, not once per batch. The index is dropped.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_PARTIAL = sa.text("finished_at IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_sync_jobs_status_finished", table_name="sync_jobs")


def downgrade() -> None:
    op.create_index("ix_sync_jobs_status_finished", "sync_jobs", ["status", "finished_at"],
                    sqlite_where=_PARTIAL, postgresql_where=_PARTIAL)
