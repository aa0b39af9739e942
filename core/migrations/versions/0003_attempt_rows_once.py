"""attempt rows are written once, when the attempt ends; no lease-expiry index

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

A claim used to insert a `running` attempt row and the completion to update it: on
PostgreSQL that is an insert plus a non-HOT update (three more index entries) per job.
Now the job's lease columns (owner, token, acquired at) describe the attempt in flight and
its row is inserted once when it ends (completion, lease expiry, lease lost, cancel,
release). Existing `running` rows are exactly the in-flight attempts the leases describe,
so they go.

The partial index on `lease_expires_at` for running jobs goes too: running jobs are bounded
by the workers' concurrency and `(status, id)` finds them, while the index cost an entry on
every claim and made every lease renewal a non-HOT update.

Stop the workers before upgrading: a worker of the previous version would still write
`running` rows at claim.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_RUNNING = sa.text("status = 'running'")


def upgrade() -> None:
    op.execute("DELETE FROM sync_job_attempts WHERE outcome = 'running'")
    op.drop_index("ix_sync_jobs_lease", table_name="sync_jobs")


def downgrade() -> None:
    op.create_index("ix_sync_jobs_lease", "sync_jobs", ["lease_expires_at"],
                    sqlite_where=_RUNNING, postgresql_where=_RUNNING)
    op.execute(
        "INSERT INTO sync_job_attempts (job_id, number, worker_id, started_at, outcome) "
        "SELECT id, lease_token, COALESCE(lease_owner, 'unknown'), "
        "COALESCE(lease_acquired_at, updated_at), 'running' FROM sync_jobs "
        "WHERE status = 'running'"
    )
