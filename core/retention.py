"""Retention: finished jobs (with their attempts) and audit events are deleted once they are
older than their outcome's retention, by one pruner at a time, in small batches that never
hold up the queue.

- **Policy.** A retention per finished status (success, canceled: 7 days; failed, dead:
  90 days), optionally per job type, and one for audit events (default: the longest job
  retention). `None` keeps forever (`never` / `0` in settings). A job's age is counted from
  its `finished_at`.
- **Lineage.** A job a replay points at (`replay_of_job_id`) is kept as long as that replay
  exists: a batch only takes jobs no replay points at, so a chain goes newest first, and an
  original whose replays were pruned goes in a later batch of the same run.
- **Only finished jobs** are ever selected (status is part of every candidate query, and
  on PostgreSQL the candidates are locked `FOR UPDATE SKIP LOCKED`, so a concurrent operator
  retry either wins before the lock, and its row no longer matches, or waits for the batch).
- **One pruner at a time** across the fleet: a session advisory lock on a dedicated
  autocommit connection on PostgreSQL; the `sync_leader_leases` row (owner, expires_at),
  taken with a conditional upsert and renewed between batches, on SQLite. The same row keeps
  the figures `metrics` shows (last run, rows pruned by it, totals).
- **Batches** delete a job's attempts and the job in one transaction (`id = ANY(...)` on
  PostgreSQL, `json_each` on SQLite). Each batch is timed: slower than the target halves the
  next one, faster than half the target grows it by a quarter; a pause as long as the batch
  (at least `min_pause`) follows, so the pruner holds SQLite's write lock at most about half
  the time and for at most about the target at once.
- **Space.** SQLite runs `PRAGMA incremental_vacuum` after each batch (migration 0009 turns
  on `auto_vacuum=INCREMENTAL`); PostgreSQL leaves it to autovacuum, tuned in 0009.

The per-type hook: `policy_from_settings(settings, per_type={"invoice": {"success": "30d"}})`;
a worker asks its registry for `retention_overrides()` (if the registry has it) and passes
that mapping (see prune_in_worker).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    case,
    exists,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from core import clock
from core.db import Database, DatabaseError, raw_connection
from core.logging import get_logger, one_line
from core.models import attempts_t, audit_t, jobs_t, leases_t
from core.statuses import JobStatus

PRUNABLE: tuple[str, ...] = (JobStatus.SUCCESS, JobStatus.CANCELED, JobStatus.FAILED,
                             JobStatus.DEAD)
AUDIT = "audit"  # the kind `syncbridge prune --status audit` names
DEFAULTS: dict[str, str] = {"success": "7d", "canceled": "7d", "failed": "90d", "dead": "90d"}
LEASE_NAME = "prune"
_ADVISORY_KEY = 7_412_013  # pg_try_advisory_lock key of the pruner (migrations use 7_412_001)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdwy])")
_MAX_SECONDS = 100 * 365 * 86400

# --- durations and the policy ---------------------------------------------------------------


def parse_duration(value: str | float | int | None) -> float | None:
    """"7d", "12h", "30m", "45s", "2w", "1y" (365 days) -> seconds; "never", "0" (or any
    zero) and None -> None (keep forever). Raises ValueError with a one-line message."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        word = str(value).strip().lower()
        if word in ("never", "0"):
            return None
        m = _DURATION.fullmatch(word)
        if not m:
            raise ValueError(f"bad duration {str(value)!r}: "
                             "say e.g. 30m, 12h, 7d, 2w, 1y, or never")
        seconds = float(m[1]) * _UNITS[m[2]]
    if not math.isfinite(seconds) or seconds < 0 or seconds > _MAX_SECONDS:
        raise ValueError(f"bad duration {str(value)!r}: between 0 and 100 years")
    return seconds or None


def parse_per_type(raw: str | Mapping[str, Any] | None) -> dict[str, dict[str, float | None]]:
    """{"invoice": {"success": "30d", "dead": "never"}} (JSON text or a mapping) -> seconds.
    Raises ValueError (one line) for unknown statuses or bad durations."""
    if raw is None or raw == "":
        return {}
    data = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(data, Mapping):
        raise ValueError('expected a JSON object like {"invoice": {"success": "30d"}}')
    out: dict[str, dict[str, float | None]] = {}
    for job_type, rules in data.items():
        if not isinstance(rules, Mapping):
            raise ValueError(f"retention of job type {job_type!r} must be an object "
                             'like {"success": "30d"}')
        for status, duration in rules.items():
            if status not in PRUNABLE:
                raise ValueError(f"job type {job_type!r}: {status!r} is not one of "
                                 + ", ".join(PRUNABLE))
            out.setdefault(str(job_type), {})[status] = parse_duration(duration)
    return out


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Seconds to keep each finished status (None: forever), per-type exceptions, audit."""

    by_status: Mapping[str, float | None]
    per_type: Mapping[str, Mapping[str, float | None]] = field(default_factory=dict)
    audit: float | None = None

    def rules(self, now: float, statuses: Sequence[str] | None = None) -> list[Rule]:
        """The candidate queries: one per status (types with an exception left out) and
        one per (type, status) exception. Keep-forever entries make no rule."""
        out: list[Rule] = []
        for status in statuses or PRUNABLE:
            if status == AUDIT:
                continue
            special = sorted(t for t, r in self.per_type.items() if status in r)
            keep = self.by_status.get(status)
            if keep is not None:
                out.append(Rule(str(status), now - keep, None, tuple(special)))
            for job_type in special:
                keep_t = self.per_type[job_type][status]
                if keep_t is not None:
                    out.append(Rule(str(status), now - keep_t, job_type, ()))
        return out


@dataclass(frozen=True, slots=True)
class Rule:
    status: str
    cutoff: float  # finished before this
    job_type: str | None  # only this type, or
    exclude: tuple[str, ...]  # every type but these

    def where(self, j: Any) -> Any:
        cond = and_(j.c.status == self.status, j.c.finished_at < self.cutoff)
        if self.job_type is not None:
            return and_(cond, j.c.job_type == self.job_type)
        if self.exclude:
            return and_(cond, j.c.job_type.not_in(self.exclude))
        return cond


def longest(values: Sequence[float | None]) -> float | None:
    """The longest retention; None (forever) if any is forever."""
    return None if any(v is None for v in values) or not values else max(
        v for v in values if v is not None)


def policy_from_settings(settings: Any,
                         per_type: Mapping[str, Mapping[str, Any]] | None = None
                         ) -> RetentionPolicy:
    """The policy the settings describe; `per_type` (e.g. from the handlers' registry) wins
    over SYNCBRIDGE_RETENTION_PER_TYPE for the (type, status) pairs it names."""
    by_status = {s: parse_duration(getattr(settings, f"retention_{s}")) for s in PRUNABLE}
    types = parse_per_type(settings.retention_per_type)
    for job_type, rules in parse_per_type(per_type).items():
        types.setdefault(job_type, {}).update(rules)
    if settings.retention_audit is not None:
        audit = parse_duration(settings.retention_audit)
    else:
        audit = longest([*by_status.values(), *(v for r in types.values() for v in r.values())])
    return RetentionPolicy(by_status, types, audit)


def manual_policy(older_than: float | None, kinds: Sequence[str]) -> RetentionPolicy:
    """`syncbridge prune --older-than D [--status ...]`: one age for every kind named."""
    return RetentionPolicy({s: older_than for s in PRUNABLE if s in kinds}, {},
                           older_than if AUDIT in kinds else None)


# --- batch sizing ---------------------------------------------------------------------------


@dataclass(slots=True)
class Tuning:
    target_seconds: float = 0.05  # a batch should take about this long (SQLite: write lock)
    start_batch: int = 200
    min_batch: int = 10
    max_batch: int = 5000
    grow: float = 1.25  # faster than half the target: next batch this much larger
    pause_factor: float = 1.0  # pause after a batch = its time x this (at least min_pause)
    min_pause: float = 0.01
    lease_seconds: float = 60.0  # SQLite lease; renewed between batches


@dataclass(slots=True)
class BatchSizer:
    tuning: Tuning
    size: int = 0

    def __post_init__(self) -> None:
        self.size = self.size or self.tuning.start_batch

    def record(self, seconds: float) -> float:
        """Adjust the size after a batch that took `seconds`; returns the pause to take."""
        t = self.tuning
        if seconds > t.target_seconds:
            self.size = max(t.min_batch, self.size // 2)
        elif seconds < t.target_seconds / 2:
            self.size = min(t.max_batch, max(self.size + 1, int(self.size * t.grow)))
        return max(t.min_pause, seconds * t.pause_factor)


# --- the leader lease ----------------------------------------------------------------------


class Lease:
    """Held leadership: renew() between batches says whether it still is."""

    def __init__(self, db: Database, owner: str, ttl: float, conn: Connection | None) -> None:
        self.db, self.owner, self.ttl, self._conn = db, owner, ttl, conn

    def renew(self) -> bool:
        if self._conn is not None:  # PostgreSQL: still ours while the session lives
            try:
                return bool(self._conn.execute(text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND "
                    "pid = pg_backend_pid() AND objid = :k AND granted"),
                    {"k": _ADVISORY_KEY}).scalar())
            except Exception:
                return False
        now = clock.now()
        with self.db.write() as conn:
            res = conn.execute(update(leases_t).where(
                leases_t.c.name == LEASE_NAME, leases_t.c.owner == self.owner,
                leases_t.c.expires_at >= now).values(expires_at=now + self.ttl))
        return res.rowcount == 1


def _upsert(db: Database) -> Any:
    return pg_insert(leases_t) if db.is_postgres else sqlite_insert(leases_t)


def _zeros() -> dict[str, int]:
    return dict(last_jobs=0, last_attempts=0, last_audit=0, total_jobs=0, total_attempts=0,
                total_audit=0)


@contextmanager
def leadership(db: Database, owner: str, *, ttl: float = 60.0) -> Iterator[Lease | None]:
    """Yields a Lease if this caller is now the one pruner, else None (someone else is)."""
    if db.is_postgres:
        conn = db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                    {"k": _ADVISORY_KEY}).scalar())
            if not got:
                yield None
                return
            try:
                now = clock.now()
                with db.write() as w:  # the row: who prunes (informational) and the figures
                    ins = _upsert(db).values(name=LEASE_NAME, owner=owner,
                                             expires_at=now + ttl, **_zeros())
                    w.execute(ins.on_conflict_do_update(
                        index_elements=["name"],
                        set_={"owner": owner, "expires_at": now + ttl}))
                yield Lease(db, owner, ttl, conn)
            finally:
                try:
                    with db.write() as w:
                        w.execute(update(leases_t).where(leases_t.c.name == LEASE_NAME,
                                                         leases_t.c.owner == owner)
                                  .values(owner=None, expires_at=0.0))
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _ADVISORY_KEY})
                except Exception:
                    pass  # the session ends below, which releases the lock anyway
        finally:
            conn.close()
        return
    now = clock.now()
    with db.write() as w:
        ins = _upsert(db).values(name=LEASE_NAME, owner=owner, expires_at=now + ttl, **_zeros())
        res = w.execute(ins.on_conflict_do_update(
            index_elements=["name"], set_={"owner": owner, "expires_at": now + ttl},
            where=or_(leases_t.c.expires_at < now, leases_t.c.owner == owner,
                      leases_t.c.owner.is_(None))))
    if res.rowcount != 1:
        yield None
        return
    try:
        yield Lease(db, owner, ttl, None)
    finally:
        try:
            with db.write() as w:
                w.execute(update(leases_t).where(leases_t.c.name == LEASE_NAME,
                                                 leases_t.c.owner == owner)
                          .values(owner=None, expires_at=0.0))
        except DatabaseError:
            pass  # it expires on its own


# --- pruning --------------------------------------------------------------------------------


@dataclass(slots=True)
class Counts:
    jobs: int = 0
    attempts: int = 0
    audit: int = 0
    by_status: dict[str, int] = field(default_factory=dict)

    def add(self, other: Counts) -> None:
        self.jobs += other.jobs
        self.attempts += other.attempts
        self.audit += other.audit
        for k, v in other.by_status.items():
            self.by_status[k] = self.by_status.get(k, 0) + v

    def to_dict(self) -> dict[str, Any]:
        return {"jobs": self.jobs, "attempts": self.attempts, "audit_events": self.audit,
                "by_status": dict(sorted(self.by_status.items()))}


@dataclass(slots=True)
class RunResult:
    leader: bool
    counts: Counts = field(default_factory=Counts)
    batches: int = 0
    seconds: float = 0.0
    stopped: str | None = None  # why it ended early: "stop", "lease lost"

    @property
    def ended_early(self) -> bool:
        # A property, not `stopped is not None` inline: a batch sets `stopped`, which a
        # type checker narrowing the loop's condition cannot see.
        return self.stopped is not None


# Archive: called inside the batch's transaction, before the delete, with the job rows
# (each with "attempts") or audit rows it is about to delete; it must persist them
# (fsync) or raise, which rolls the batch back.
Archive = Callable[[str, list[dict[str, Any]]], None]


def _ids_param(db: Database, ids: list[int]) -> Any:
    return ids if db.is_postgres else json.dumps(ids)


def _in_ids(db: Database, column: str) -> str:
    return f"{column} = ANY(:ids)" if db.is_postgres else \
        f"{column} IN (SELECT value FROM json_each(:ids))"


def _candidates(db: Database, rule: Rule, limit: int, after: float | None) -> Any:
    """The rule's oldest jobs through ix_sync_jobs_finished_at, from `after` on (the
    previous batch's newest): the rows before it that stayed (another status, a kept
    replay chain, locked) are not walked again by every batch."""
    j = jobs_t.alias("j")
    r = jobs_t.alias("r")
    cond = [rule.where(j), ~exists().where(r.c.replay_of_job_id == j.c.id)]
    if after is not None:
        cond.append(j.c.finished_at >= after)
    q = (select(j.c.id, j.c.finished_at).where(*cond)
         .order_by(j.c.finished_at).limit(limit))
    if db.is_postgres:
        q = q.with_for_update(skip_locked=True, of=j)
    return q


def _rows(conn: Connection, q: Any) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.execute(q)]


def _job_batch(db: Database, conn: Connection, rule: Rule, limit: int,
               archive: Archive | None, after: float | None = None
               ) -> tuple[list[int], int, float | None]:
    """Delete one batch: (job ids, attempts deleted, the newest finished_at deleted)."""
    found = conn.execute(_candidates(db, rule, limit, after)).all()
    ids = [int(i) for i, _ in found]
    if not ids:
        return ids, 0, after
    newest = max(float(f) for _, f in found)
    if archive is not None:
        jobs = _rows(conn, select(jobs_t).where(jobs_t.c.id.in_(ids)).order_by(jobs_t.c.id))
        by_job: dict[int, list[dict[str, Any]]] = {}
        for a in _rows(conn, select(attempts_t).where(attempts_t.c.job_id.in_(ids))
                       .order_by(attempts_t.c.job_id, attempts_t.c.number)):
            by_job.setdefault(a["job_id"], []).append(a)
        archive("job", [{**job, "attempts": by_job.get(job["id"], [])} for job in jobs])
    p = {"ids": _ids_param(db, ids)}
    attempts = conn.execute(text(
        f"DELETE FROM sync_job_attempts WHERE {_in_ids(db, 'job_id')}"), p).rowcount
    deleted = conn.execute(text(f"DELETE FROM sync_jobs WHERE {_in_ids(db, 'id')}"), p).rowcount
    if deleted != len(ids):  # locked (PostgreSQL) or under the write lock (SQLite): cannot
        raise RuntimeError(f"prune: {deleted} of {len(ids)} selected jobs deleted")
    return ids, int(attempts), newest


def _audit_batch(db: Database, conn: Connection, cutoff: float, limit: int,
                 archive: Archive | None) -> int:
    q = select(audit_t.c.id).where(audit_t.c.at < cutoff).order_by(audit_t.c.at).limit(limit)
    if db.is_postgres:
        q = q.with_for_update(skip_locked=True)
    ids = [int(i) for i in conn.execute(q).scalars()]
    if ids and archive is not None:
        archive("audit_event", _rows(conn, select(audit_t).where(audit_t.c.id.in_(ids))
                                     .order_by(audit_t.c.id)))
    if ids:
        conn.execute(text(f"DELETE FROM sync_audit_events WHERE {_in_ids(db, 'id')}"),
                     {"ids": _ids_param(db, ids)})
    return len(ids)


def _record(conn: Connection, c: Counts) -> None:
    conn.execute(update(leases_t).where(leases_t.c.name == LEASE_NAME).values(
        last_jobs=leases_t.c.last_jobs + c.jobs,
        last_attempts=leases_t.c.last_attempts + c.attempts,
        last_audit=leases_t.c.last_audit + c.audit,
        total_jobs=leases_t.c.total_jobs + c.jobs,
        total_attempts=leases_t.c.total_attempts + c.attempts,
        total_audit=leases_t.c.total_audit + c.audit))


def _incremental_vacuum(db: Database, pages: int = 4096) -> None:
    """Give up to `pages` free pages back to the file system (SQLite). Each step of the
    pragma frees one page and Python's sqlite3 steps a statement without result columns
    once, so it is executed once per page (a few microseconds each)."""
    if db.is_postgres:
        return
    with db.write() as conn:
        cur = raw_connection(conn).cursor()
        free = int(cur.execute("PRAGMA freelist_count").fetchone()[0])
        for _ in range(min(free, pages)):
            cur.execute("PRAGMA incremental_vacuum")
        cur.close()


def prune(db: Database, policy: RetentionPolicy, *, owner: str,
          statuses: Sequence[str] | None = None, now: float | None = None,
          archive: Archive | None = None, stop: threading.Event | None = None,
          tuning: Tuning | None = None, log: Any = None,
          in_batch: Callable[[int], None] | None = None) -> RunResult:
    """One pruning run, if this caller gets the leader lease: every rule's candidates, in
    batches, until none is left (or `stop` is set, or the lease is lost). `statuses` limits
    the kinds (finished statuses and "audit"). `in_batch(n)` is called inside batch n's
    transaction after its deletes (tests use it to die mid-batch)."""
    tuning = tuning or Tuning(target_seconds=0.05 if db.is_postgres else 0.02)
    log = log or get_logger(component="prune")
    stop = stop or threading.Event()
    started = time.monotonic()
    now = clock.now() if now is None else now
    kinds = tuple(statuses or (*PRUNABLE, AUDIT))
    rules = policy.rules(now, [k for k in kinds if k != AUDIT])
    audit_cutoff = now - policy.audit if AUDIT in kinds and policy.audit is not None else None
    with leadership(db, owner, ttl=tuning.lease_seconds) as lease:
        if lease is None:
            return RunResult(leader=False)
        result = RunResult(leader=True)
        with db.write() as conn:
            conn.execute(update(leases_t).where(leases_t.c.name == LEASE_NAME).values(
                last_run_at=clock.now(), last_run_finished_at=None, last_jobs=0,
                last_attempts=0, last_audit=0))
        sizer = BatchSizer(tuning)

        def batch(work: Callable[[Connection, int], Counts], what: dict[str, Any]) -> bool:
            """One batch; False when there is nothing left for it (or we must stop)."""
            size = sizer.size
            t0 = time.monotonic()
            with db.write() as conn:
                got = work(conn, size)
                if got.jobs or got.audit:
                    _record(conn, got)
                    if in_batch is not None:
                        in_batch(result.batches + 1)
            if got.jobs or got.audit:
                _incremental_vacuum(db)
            took = time.monotonic() - t0
            if not (got.jobs or got.audit):
                return False
            result.batches += 1
            result.counts.add(got)
            pause = sizer.record(took)
            log.info("prune.batch", **what, jobs=got.jobs, attempts=got.attempts,
                     audit_events=got.audit, size=size, seconds=round(took, 4),
                     next_size=sizer.size)
            if not lease.renew():
                result.stopped = "lease lost"
                return False
            if stop.wait(pause):
                result.stopped = "stop"
                return False
            return got.jobs + got.audit >= size

        try:
            # Repeat while a pass deleted jobs: replays pruned in one pass free their
            # originals (lineage) for the next.
            progressed = True
            while progressed and result.stopped is None:
                progressed = False
                for rule in rules:
                    cursor: list[float | None] = [None]  # this pass's newest deleted

                    def jobs_work(conn: Connection, size: int, rule: Rule = rule,
                                  cursor: list[float | None] = cursor) -> Counts:
                        ids, attempts, cursor[0] = _job_batch(db, conn, rule, size, archive,
                                                              cursor[0])
                        return Counts(len(ids), attempts, 0,
                                      {rule.status: len(ids)} if ids else {})
                    what = {"status": rule.status, "job_type": rule.job_type}
                    while result.stopped is None:
                        before = result.counts.jobs
                        more = batch(jobs_work, what)
                        progressed = progressed or result.counts.jobs > before
                        if not more:
                            break
                    if result.ended_early:
                        break
            cutoff = audit_cutoff
            if cutoff is not None:
                def audit_work(conn: Connection, size: int) -> Counts:
                    return Counts(0, 0, _audit_batch(db, conn, cutoff, size, archive))
                while result.stopped is None and batch(audit_work, {"status": AUDIT}):
                    pass
        finally:
            result.seconds = time.monotonic() - started
            try:
                with db.write() as conn:
                    conn.execute(update(leases_t).where(leases_t.c.name == LEASE_NAME)
                                 .values(last_run_finished_at=clock.now()))
            except DatabaseError:
                pass
        log.info("prune.done", jobs=result.counts.jobs, attempts=result.counts.attempts,
                 audit_events=result.counts.audit, batches=result.batches,
                 seconds=round(result.seconds, 3), stopped=result.stopped)
        return result


def count_prunable(db: Database, policy: RetentionPolicy, *,
                   statuses: Sequence[str] | None = None, now: float | None = None) -> Counts:
    """What prune(...) with the same arguments would delete, counted without deleting (the
    `--dry-run`): eligible jobs minus those a kept replay chain still points at."""
    now = clock.now() if now is None else now
    kinds = tuple(statuses or (*PRUNABLE, AUDIT))
    rules = policy.rules(now, [k for k in kinds if k != AUDIT])
    out = Counts()
    with db.read() as conn:
        if rules:
            j = jobs_t
            eligible = or_(*(r.where(j) for r in rules))
            # Every ancestor of a job that stays (through replay_of_job_id) stays.
            p = jobs_t.alias("p")
            up = (select(j.c.replay_of_job_id.label("id"))
                  .where(j.c.replay_of_job_id.is_not(None),
                         case((eligible, 1), else_=0) == 0)
                  .cte("kept_up", recursive=True))
            up = up.union(select(p.c.replay_of_job_id).where(
                p.c.id == up.c.id, p.c.replay_of_job_id.is_not(None)))
            doomed = select(j.c.id).where(eligible, j.c.id.not_in(select(up.c.id)))
            for status, n in conn.execute(
                    select(j.c.status, func.count()).where(j.c.id.in_(doomed))
                    .group_by(j.c.status)).all():
                out.by_status[str(status)] = int(n)
                out.jobs += int(n)
            out.attempts = int(conn.execute(select(func.count()).select_from(attempts_t)
                                            .where(attempts_t.c.job_id.in_(doomed))).scalar()
                               or 0)
        if AUDIT in kinds and policy.audit is not None:
            out.audit = int(conn.execute(select(func.count()).select_from(audit_t)
                                         .where(audit_t.c.at < now - policy.audit)).scalar()
                            or 0)
    return out


# --- figures --------------------------------------------------------------------------------


@dataclass(slots=True)
class RetentionStats:
    last_run_at: float | None = None
    last_run_finished_at: float | None = None
    last_jobs: int = 0
    last_attempts: int = 0
    last_audit: int = 0
    total_jobs: int = 0
    total_attempts: int = 0
    total_audit: int = 0
    owner: str | None = None  # the pruner holding the lease now, if any


def read_stats(conn: Connection) -> RetentionStats:
    row = conn.execute(select(leases_t).where(leases_t.c.name == LEASE_NAME)).first()
    if row is None:
        return RetentionStats()
    m = row._mapping
    live = m["owner"] if m["expires_at"] >= clock.now() else None
    return RetentionStats(m["last_run_at"], m["last_run_finished_at"], m["last_jobs"],
                          m["last_attempts"], m["last_audit"], m["total_jobs"],
                          m["total_attempts"], m["total_audit"], live)


# --- inside a worker ------------------------------------------------------------------------


async def prune_in_worker(db: Database, settings: Any, owner: str, registry: Any = None,
                          *, log: Any = None) -> None:
    """A worker's pruning task: every SYNCBRIDGE_PRUNE_INTERVAL_SECONDS, try to be the
    pruner and run. Runs in a thread of its own (never the worker's database threads); on
    cancellation (shutdown) it stops between batches and waits for the batch in progress."""
    log = log or get_logger(worker_id=owner, component="prune")
    hook = getattr(registry, "retention_overrides", None)
    stop = threading.Event()
    loop = asyncio.get_running_loop()
    future: asyncio.Future[RunResult] | None = None
    try:
        while True:
            await asyncio.sleep(settings.prune_interval_seconds)
            try:
                policy = policy_from_settings(settings, hook() if callable(hook) else None)
            except ValueError as exc:
                log.warning("prune.failed", error=one_line(exc))
                continue
            future = loop.run_in_executor(None, partial(prune, db, policy, owner=owner,
                                                        stop=stop, log=log))
            try:
                await future
            except Exception as exc:  # a database hiccup: try again next interval
                log.warning("prune.failed", error=one_line(exc))
            future = None
    except asyncio.CancelledError:
        stop.set()
        if future is not None:
            await asyncio.wait([future], timeout=10.0)
        raise
