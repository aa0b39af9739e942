"""Aggregate health of the queue, overall and per job type.

Built to cost little at a million jobs, with no counter on the workers' hot path:

- counts by status (and retries) are exact. PostgreSQL: one `GROUP BY job_type, status`
  (a hash aggregate over one scan, one snapshot). SQLite sorts for every GROUP BY, and
  sorting every row of a big table is slow: there, totals per type come from the `(job_type, id)`
  index alone (no table row read), and the one table scan feeds the sort only the jobs
  that are not `success` or needed retries; `success` is the type's total minus the rest
  (both statements read one snapshot: SQLite's read transaction).
- execution time (avg, p50, p95) is over the SAMPLE_ATTEMPTS most recently finished
  attempts (the `finished_at` index): the queue's current behaviour, not its whole history.
- finished in the last minute is exact overall (counted in the partial `finished_at`
  index); per type it is exact up to RECENT_SAMPLE jobs a minute, and above that the exact
  total split by the types' shares among the RECENT_SAMPLE most recently finished jobs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Integer, case, cast, func, select, text

from core import clock, retention, upstream_protection
from core.db import Database
from core.models import attempts_t, jobs_t
from core.statuses import STATUSES, AttemptOutcome, JobStatus

# Attempt outcomes that decided their job, and the ones that are not a failure.
_DECIDED = (AttemptOutcome.SUCCESS, AttemptOutcome.FAILED, AttemptOutcome.DEAD)
_NOT_A_FAILURE = (AttemptOutcome.SUCCESS, AttemptOutcome.RUNNING)

SAMPLE_ATTEMPTS = 5000  # avg / p50 / p95 come from the most recent finished attempts
RECENT_SAMPLE = 20_000  # finished-last-minute per type: exact up to this many jobs


@dataclass(slots=True)
class TypeMetrics:
    """One job type's figures (or every type's, as `overall`)."""

    total_jobs: int = 0
    finished_jobs: int = 0
    success_rate: float | None = None  # success / (success + failed + dead), all time
    retry_count: int = 0  # retries ever made: attempts beyond each job's first, all time
    # Over the SAMPLE_ATTEMPTS most recently finished attempts (of any type):
    avg_execution_ms: float | None = None
    by_status: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    dead_letter_depth: int = 0
    due_depth: int = 0
    oldest_due_age_s: float | None = None
    p50_execution_ms: float | None = None
    p95_execution_ms: float | None = None
    finished_last_minute: int = 0  # per type estimated above RECENT_SAMPLE (module doc)


@dataclass(slots=True)
class Metrics:
    generated_at: float
    overall: TypeMetrics
    per_type: dict[str, TypeMetrics]
    # Retention: the pruner's last run and totals (core.retention, the leader-lease row).
    retention: retention.RetentionStats = field(default_factory=retention.RetentionStats)
    # Upstream protection: core.upstream_protection.states (the upstream section).
    upstreams: list[Any] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        r = self.retention
        return {"generated_at": clock.iso(self.generated_at), **asdict(self.overall),
                "per_type": {k: asdict(v) for k, v in self.per_type.items()},
                "upstreams": [u.as_dict() for u in self.upstreams],
                "retention": {
                    "last_run_at": clock.iso(r.last_run_at),
                    "last_run_finished_at": clock.iso(r.last_run_finished_at),
                    "last_run_pruned": {"jobs": r.last_jobs, "attempts": r.last_attempts,
                                        "audit_events": r.last_audit},
                    "total_pruned": {"jobs": r.total_jobs, "attempts": r.total_attempts,
                                     "audit_events": r.total_audit},
                    "pruning_now": r.owner}}


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    k = (len(sorted_values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def _retries(attempt_count: Any) -> Any:
    return func.sum(case((attempt_count > 1, attempt_count - 1), else_=0))


def _status_counts(db: Database, conn: Any) -> list[tuple[str, str, int, int]]:
    """(job_type, status, jobs, retries) for every pair present."""
    j = jobs_t.c
    if db.is_postgres:
        rows = conn.execute(select(j.job_type, j.status, func.count(), _retries(j.attempt_count))
                            .group_by(j.job_type, j.status)).all()
        return [(t, s, int(n), int(r or 0)) for t, s, n, r in rows]
    totals = dict(conn.execute(select(j.job_type, func.count()).group_by(j.job_type)).all())
    # NOT INDEXED: one pass over the table; through an index SQLite would read every row
    # out of order to spare itself the (small) sort.
    few = conn.execute(text(
        "SELECT job_type, status, count(*), sum(CASE WHEN attempt_count > 1 THEN "
        "attempt_count - 1 ELSE 0 END) FROM sync_jobs NOT INDEXED "
        "WHERE status <> :success OR attempt_count > 1 GROUP BY job_type, status"),
        {"success": JobStatus.SUCCESS}).all()
    out: list[tuple[str, str, int, int]] = []
    success_retries: dict[str, int] = {}
    for job_type, status, count, retries in few:
        if status == JobStatus.SUCCESS:  # only the successes that needed retries were counted
            success_retries[job_type] = int(retries or 0)
            continue
        out.append((job_type, status, int(count), int(retries or 0)))
        totals[job_type] = totals.get(job_type, 0) - int(count)
    for job_type, rest in totals.items():
        if rest > 0 or job_type in success_retries:
            out.append((job_type, JobStatus.SUCCESS, max(0, rest),
                        success_retries.get(job_type, 0)))
    return out


def _finished_since(conn: Any, since: float) -> tuple[int, dict[str, int]]:
    """Jobs finished since `since`: the exact total and a split per type (see module)."""
    j = jobs_t.c
    total = int(conn.execute(select(func.count()).select_from(jobs_t)
                             .where(j.finished_at >= since)).scalar() or 0)
    if not total:
        return 0, {}
    newest = (select(j.job_type.label("job_type")).where(j.finished_at >= since)
              .order_by(j.finished_at.desc()).limit(RECENT_SAMPLE).subquery())
    shares = conn.execute(select(newest.c.job_type, func.count())
                          .group_by(newest.c.job_type)).all()
    seen = sum(int(n) for _, n in shares)
    if seen >= total or not seen:
        return total, {t: int(n) for t, n in shares}
    # Largest remainder: the per-type figures add up to the exact total.
    raw = {t: int(n) * total / seen for t, n in shares}
    split = {t: int(v) for t, v in raw.items()}
    short = total - sum(split.values())
    for t in sorted(raw, key=lambda t: raw[t] - split[t], reverse=True)[:short]:
        split[t] += 1
    return total, split


def collect(db: Database, job_types: Iterable[str] = (), *,
            upstreams_by_type: Mapping[str, Sequence[str]] | None = None) -> Metrics:
    """Queue health per job type; `job_types` (the app's) are listed even without jobs;
    the upstreams' protection states (`upstreams_by_type`: else as the workers recorded)."""
    now = clock.now()
    per: dict[str, TypeMetrics] = {name: TypeMetrics() for name in job_types}
    overall = TypeMetrics()
    j = jobs_t.c
    a = attempts_t.c
    with db.read() as conn:
        by_status = _status_counts(db, conn)
        due = conn.execute(
            select(j.job_type, func.count(), func.min(j.next_run_at))
            .where(j.status == JobStatus.PENDING, j.next_run_at <= now).group_by(j.job_type)
        ).all()
        recent_total, recent = _finished_since(conn, now - 60)
        sample = list(conn.execute(
            select(j.job_type, a.duration_ms)
            .select_from(attempts_t.join(jobs_t, a.job_id == j.id))
            .where(a.finished_at.is_not(None), a.duration_ms.is_not(None))
            .order_by(a.finished_at.desc()).limit(SAMPLE_ATTEMPTS)
        ).all())
        pruned = retention.read_stats(conn)

    def bucket(job_type: str) -> TypeMetrics:
        return per.setdefault(job_type, TypeMetrics())

    for job_type, status, count, retries in by_status:
        for m in (bucket(job_type), overall):
            m.by_status[status] = m.by_status.get(status, 0) + count
            m.total_jobs += count
            m.retry_count += retries
    for job_type, count, oldest in due:
        for m in (bucket(job_type), overall):
            m.due_depth += count
            age = max(0.0, now - oldest)
            m.oldest_due_age_s = max(m.oldest_due_age_s or 0.0, age)
    for job_type, count in recent.items():
        bucket(job_type).finished_last_minute += count
    overall.finished_last_minute = recent_total
    durations: dict[str, list[float]] = {}
    for job_type, ms in sample:
        durations.setdefault(job_type, []).append(float(ms))
    everything = sorted(ms for values in durations.values() for ms in values)
    overall.avg_execution_ms = sum(everything) / len(everything) if everything else None
    overall.p50_execution_ms = percentile(everything, 0.5)
    overall.p95_execution_ms = percentile(everything, 0.95)
    for job_type, values in durations.items():
        values.sort()
        m = bucket(job_type)
        m.avg_execution_ms = sum(values) / len(values)
        m.p50_execution_ms = percentile(values, 0.5)
        m.p95_execution_ms = percentile(values, 0.95)
    for m in (overall, *per.values()):
        s = m.by_status
        decided = s[JobStatus.SUCCESS] + s[JobStatus.FAILED] + s[JobStatus.DEAD]
        m.finished_jobs = decided + s[JobStatus.CANCELED]
        m.success_rate = s[JobStatus.SUCCESS] / decided if decided else None
        m.dead_letter_depth = s[JobStatus.DEAD]
    counts = {(t, st): n for t, tm in per.items() for st, n in tm.by_status.items()}
    upstreams = upstream_protection.states(db, upstreams_by_type=upstreams_by_type,
                                           counts=counts)
    return Metrics(now, overall, dict(sorted(per.items())), pruned, upstreams)


def finished_series(db: Database, *, buckets: int = 30, bucket_seconds: float = 10.0
                    ) -> tuple[list[int], list[int]]:
    """Jobs finished and attempts that failed, per interval, oldest first (sparklines).
    Counted in the database, one row per interval (the window may hold 100,000 attempts)."""
    now = clock.now()
    start = now - buckets * bucket_seconds
    done = [0] * buckets
    failures = [0] * buckets
    a = attempts_t.c
    offset = (a.finished_at - start) / bucket_seconds
    # Rounding down: PostgreSQL's CAST rounds to nearest, SQLite's truncates (and offsets
    # here are never negative).
    index = func.floor(offset) if db.is_postgres else cast(offset, Integer)
    with db.read() as conn:
        rows = conn.execute(
            select(index.label("i"),
                   func.sum(case((a.outcome.in_(_DECIDED), 1), else_=0)),
                   func.sum(case((a.outcome.in_(_NOT_A_FAILURE), 0), else_=1)))
            .where(a.finished_at >= start).group_by(text("i"))
        ).all()
    for i, finished, failed in rows:
        k = min(buckets - 1, max(0, int(i)))
        done[k] += int(finished or 0)
        failures[k] += int(failed or 0)
    return done, failures
