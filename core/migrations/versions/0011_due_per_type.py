"""the claim of one job type: due jobs by (job_type, next_run_at)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02

While an upstream is paused, open or at its limit, the job types calling it are held back
and the workers claim the others (core.upstream_protection). Their claim walked
`ix_sync_jobs_due` in next_run_at order across every type, filtering by type: the held
types' backlog, due and older than anything else, was walked past by every claim of every
worker, O(backlog) each (with a million held jobs, a quarter of a second per claim). The
held-back claim now takes one type at a time through `ix_sync_jobs_due_type (job_type,
next_run_at) WHERE status = 'pending'` (core.leases). Partial on pending: an entry per
enqueue or retry, none per claim or completion.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.create_index("ix_sync_jobs_due_type", "sync_jobs", ["job_type", "next_run_at"],
                    sqlite_where=_PENDING, postgresql_where=_PENDING)


def downgrade() -> None:
    op.drop_index("ix_sync_jobs_due_type", table_name="sync_jobs")
