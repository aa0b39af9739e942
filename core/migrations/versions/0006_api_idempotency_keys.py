"""idempotency keys of the HTTP API

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

`syncbridge serve` answers a POST that carries an `Idempotency-Key` once: the key's row is
inserted first (state `in_progress`, the primary key makes a concurrent second request
fail to insert and get 409), then completed with the response it produced; a repeat gets
that response back until the row expires (core.api.idempotency). Keys are scoped by the
token name that sent them, so two clients cannot collide.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sync_api_idempotency",
        sa.Column("scope", sa.String(128), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("headers", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", name="pk_sync_api_idempotency"),
    )
    op.create_index("ix_sync_api_idempotency_expires", "sync_api_idempotency", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_sync_api_idempotency_expires", table_name="sync_api_idempotency")
    op.drop_table("sync_api_idempotency")
