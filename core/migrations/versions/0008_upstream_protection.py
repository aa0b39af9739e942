"""upstream protection: the fleet's shared state per named upstream

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

`sync_upstreams` holds, per named upstream, its circuit breaker (state, consecutive
failures in the window, cool-down, next probe, the probe's lease), a Retry-After pause, the
token bucket of a configured rate limit, the adaptive (AIMD) rate, and the job types the
fleet's workers say call it (so the faces read hold reasons without loading the app)
(core.upstream_protection). Audit rows about an upstream have no job: `job_id` becomes
nullable and `upstream` names it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sync_upstreams",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("paused_until", sa.Double(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("failures_since", sa.Double(), nullable=True),
        sa.Column("opened_at", sa.Double(), nullable=True),
        sa.Column("cooldown_seconds", sa.Double(), nullable=False),
        sa.Column("next_probe_at", sa.Double(), nullable=True),
        sa.Column("probe_owner", sa.String(160), nullable=True),
        sa.Column("probe_job_id", sa.Integer(), nullable=True),
        sa.Column("probe_expires_at", sa.Double(), nullable=True),
        sa.Column("tokens", sa.Double(), nullable=True),
        sa.Column("tokens_at", sa.Double(), nullable=True),
        sa.Column("rate", sa.Double(), nullable=True),
        sa.Column("recent_429", sa.Integer(), nullable=False),
        sa.Column("recent_5xx", sa.Integer(), nullable=False),
        sa.Column("recent_since", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("job_types", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("sync_audit_events") as batch:
        batch.alter_column("job_id", existing_type=sa.Integer(), nullable=True)
        batch.add_column(sa.Column("upstream", sa.String(64), nullable=True))


def downgrade() -> None:
    op.execute("DELETE FROM sync_audit_events WHERE job_id IS NULL")
    with op.batch_alter_table("sync_audit_events") as batch:
        batch.drop_column("upstream")
        batch.alter_column("job_id", existing_type=sa.Integer(), nullable=False)
    op.drop_table("sync_upstreams")
