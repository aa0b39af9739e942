"""cheaper writes on the hot path: byte-order text keys on PostgreSQL, no attempt FK

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23

Measured with a 60,000-job drain on PostgreSQL 15 (server CPU per job, same machine, same
run; bench/README.md):

- The text columns the hot indexes hold (job type, entity id, status, correlation id) get
  the "C" collation on PostgreSQL: every index insert compares keys, and with a libc
  collation (even C.UTF-8) each comparison goes through strcoll; "C" is a memcmp. Order is
  by code point either way for UTF-8, so prefix ranges and sorts read the same. SQLite
  already compares bytes.
- The foreign key from attempts to jobs goes: its check runs a `SELECT ... FOR KEY SHARE`
  on the job row for every attempt inserted, i.e. a second lock and write on a row the same
  statement just updated (about 11 % of the server's time per job). Attempts are only
  inserted by the statement or transaction that ended the lease on their job, and jobs are
  never deleted, so the reference cannot dangle through SyncBridge; a script that deletes
  jobs must delete their attempts first.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_TEXT_KEYS = (("job_type", 64), ("entity_id", 128), ("status", 16), ("correlation_id", 64))
_FK = "fk_sync_job_attempts_job_id_sync_jobs"
# Names the FK SQLite left unnamed, so batch mode can drop it.
_NAMING = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE sync_job_attempts "
                   "DROP CONSTRAINT IF EXISTS sync_job_attempts_job_id_fkey")
        for column, length in _TEXT_KEYS:
            op.execute(f'ALTER TABLE sync_jobs ALTER COLUMN {column} '
                       f'TYPE varchar({length}) COLLATE "C"')
        return
    with op.batch_alter_table("sync_job_attempts", naming_convention=_NAMING) as batch_op:
        batch_op.drop_constraint(_FK, type_="foreignkey")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for column, length in _TEXT_KEYS:
            op.execute(f'ALTER TABLE sync_jobs ALTER COLUMN {column} '
                       f'TYPE varchar({length}) COLLATE "default"')
        op.execute("ALTER TABLE sync_job_attempts ADD CONSTRAINT "
                   "sync_job_attempts_job_id_fkey FOREIGN KEY (job_id) "
                   "REFERENCES sync_jobs (id) ON DELETE CASCADE")
        return
    with op.batch_alter_table("sync_job_attempts", naming_convention=_NAMING) as batch_op:
        batch_op.create_foreign_key(_FK, "sync_jobs", ["job_id"], ["id"], ondelete="CASCADE")
