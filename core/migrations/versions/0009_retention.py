"""retention: the pruner's indexes, its leader lease, space given back

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

core.retention deletes finished jobs (with their attempts) and audit events past their
retention, oldest first:

- `ix_sync_jobs_status_finished (status, finished_at) WHERE finished_at IS NOT NULL`: the
  candidates of one status in age order, without walking past the other statuses' rows
  (the `finished_at` index alone would, e.g. 90 days of failed jobs before each success
  older than 7 days). Partial: claims (finished_at NULL) write no entry into it.
- `ix_audit_at`: audit events oldest first (operator actions only: a rare write).
- `sync_leader_leases`: one row per fleet-wide role ('prune'): on SQLite the lock itself
  (owner, expires_at), on PostgreSQL a record of who holds the advisory lock; and the
  pruner's figures (last run, rows pruned by it, totals) that `metrics` shows.
- SQLite: `auto_vacuum = INCREMENTAL`, so the pruner's `PRAGMA incremental_vacuum` gives
  freed pages back to the file system. The mode only applies to a database created with
  it or rebuilt by VACUUM, and VACUUM cannot run inside a transaction: the migration
  commits what ran before it (the database is then at 0008, consistent), VACUUMs once, and
  opens a new transaction for the rest. On a large existing file this VACUUM rewrites it
  once (it needs as much free disk as the file).
- PostgreSQL: autovacuum and fillfactor on the hot tables (reasons below).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_PARTIAL = sa.text("finished_at IS NOT NULL")

# sync_jobs: every job is updated twice (claim, completion) and finished jobs are deleted
# in bulk by the pruner. fillfactor 85 leaves room on each page so the new row version of
# an update (and of every lease renewal, a HOT update: no indexed column changes) lands on
# the same page instead of extending the table. The default autovacuum trigger (20% of the
# table dead) means 2M dead rows at 10M jobs before anything is reclaimed, while the pruner
# makes dead rows steadily: 2% (+1000) vacuums early and often, and an unthrottled cost
# delay of 1 ms keeps up with it. sync_job_attempts is insert-then-delete: the same
# vacuum trigger, and insert-triggered vacuums keep its visibility map fresh.
_JOBS_STORAGE = {
    "fillfactor": "85",
    "autovacuum_vacuum_scale_factor": "0.02",
    "autovacuum_vacuum_threshold": "1000",
    "autovacuum_analyze_scale_factor": "0.02",
    "autovacuum_vacuum_cost_delay": "1",
}
_ATTEMPTS_STORAGE = {
    "autovacuum_vacuum_scale_factor": "0.02",
    "autovacuum_vacuum_threshold": "1000",
    "autovacuum_vacuum_insert_scale_factor": "0.02",
    "autovacuum_analyze_scale_factor": "0.02",
}


def _sqlite_incremental_vacuum(mode: str) -> None:
    raw: Any = op.get_bind().connection.driver_connection
    if raw.execute("PRAGMA auto_vacuum").fetchone()[0] == {"incremental": 2, "none": 0}[mode]:
        return
    raw.execute("COMMIT")
    raw.execute(f"PRAGMA auto_vacuum = {mode.upper()}")
    raw.execute("VACUUM")
    raw.execute("BEGIN IMMEDIATE")


def upgrade() -> None:
    op.create_index("ix_sync_jobs_status_finished", "sync_jobs", ["status", "finished_at"],
                    sqlite_where=_PARTIAL, postgresql_where=_PARTIAL)
    op.create_index("ix_audit_at", "sync_audit_events", ["at"])
    op.create_table(
        "sync_leader_leases",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(160), nullable=True),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.Column("last_run_at", sa.Double(), nullable=True),
        sa.Column("last_run_finished_at", sa.Double(), nullable=True),
        *(sa.Column(c, sa.Integer(), nullable=False, server_default="0")
          for c in ("last_jobs", "last_attempts", "last_audit", "total_jobs",
                    "total_attempts", "total_audit")),
        sa.PrimaryKeyConstraint("name", name="pk_sync_leader_leases"),
    )
    if op.get_bind().dialect.name == "postgresql":
        for table, options in (("sync_jobs", _JOBS_STORAGE),
                               ("sync_job_attempts", _ATTEMPTS_STORAGE)):
            op.execute(f"ALTER TABLE {table} SET ("
                       + ", ".join(f"{k} = {v}" for k, v in options.items()) + ")")
    else:
        _sqlite_incremental_vacuum("incremental")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, options in (("sync_jobs", _JOBS_STORAGE),
                               ("sync_job_attempts", _ATTEMPTS_STORAGE)):
            op.execute(f"ALTER TABLE {table} RESET (" + ", ".join(options) + ")")
    op.drop_table("sync_leader_leases")
    op.drop_index("ix_audit_at", table_name="sync_audit_events")
    op.drop_index("ix_sync_jobs_status_finished", table_name="sync_jobs")
    # SQLite keeps auto_vacuum = INCREMENTAL: harmless to 0006's code, and turning it off
    # would cost another VACUUM of the whole file.
