"""Worker heartbeats: each worker's row in sync_workers, written every
`heartbeat_interval(lease_seconds)` seconds, and the rules derived from that interval
(when a worker counts as stale, when its row is forgotten).
"""

from __future__ import annotations

from sqlalchemy import delete, select, update

from core.db import Database
from core.models import workers_t
from core.records import WorkerInfo

# A worker beats at least this often (short leases) and at most this rarely (long ones).
MIN_HEARTBEAT_SECONDS = 0.05
MAX_HEARTBEAT_SECONDS = 5.0
# Beats a worker may miss before the console shows it as stale, and the least time that is.
STALE_AFTER_MISSED_BEATS = 3
MIN_STALE_SECONDS = 15.0
# A worker not seen for this long is gone (stopped or killed): its row is pruned when a
# worker starts (every process start is a new worker id).
FORGET_WORKERS_AFTER_SECONDS = 86400.0


def heartbeat_interval(lease_seconds: float) -> float:
    """Seconds between a worker's heartbeats, which also renew its leases and recover
    expired ones: three beats per lease, so a lease outlives two missed beats."""
    return max(MIN_HEARTBEAT_SECONDS, min(lease_seconds / 3.0, MAX_HEARTBEAT_SECONDS))


def stale_after(lease_seconds: float) -> float:
    """Seconds without a heartbeat after which a worker is shown as stale: three missed
    beats, and never less than 15 s."""
    return max(MIN_STALE_SECONDS, STALE_AFTER_MISSED_BEATS * heartbeat_interval(lease_seconds))


def record_heartbeat(db: Database, info: WorkerInfo) -> None:
    values = info.to_dict(iso_times=False)
    with db.write() as conn:
        res = conn.execute(
            update(workers_t).where(workers_t.c.id == info.id).values(
                last_seen_at=info.last_seen_at, state=info.state, in_flight=info.in_flight,
                processed=info.processed, concurrency=info.concurrency)
        )
        if res.rowcount == 0:
            conn.execute(workers_t.insert().values(**values))


def list_workers(db: Database, *, limit: int = 200) -> list[WorkerInfo]:
    with db.read() as conn:
        rows = conn.execute(
            select(workers_t).order_by(workers_t.c.last_seen_at.desc()).limit(limit)
        ).all()
    return [WorkerInfo.from_row(r) for r in rows]


def prune_workers(db: Database, older_than: float) -> int:
    with db.write() as conn:
        return conn.execute(
            # Not seen for that long means gone, whether it stopped or was killed.
            delete(workers_t).where(workers_t.c.last_seen_at < older_than)
        ).rowcount
