"""slots of recurring schedules

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

A recurring schedule declared in the app (`Registry.recurring`, core.schedules) enqueues
once per slot across a whole fleet: every worker ticks, and the primary key (schedule,
slot_at) lets exactly one of them insert the slot, in the same transaction as its job.
`job_id` is NULL when the slot was skipped (the schedule's previous job still active).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sync_schedule_slots",
        sa.Column("schedule", sa.String(128), nullable=False),
        sa.Column("slot_at", sa.Double(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("schedule", "slot_at", name="pk_sync_schedule_slots"),
    )


def downgrade() -> None:
    op.drop_table("sync_schedule_slots")
