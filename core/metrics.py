"""Aggregate health of the queue, overall and per job type."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import case, func, select

from core import clock
from core.db import Database
from core.models import CANCELED, DEAD, FAILED, PENDING, STATUSES, SUCCESS, attempts_t, jobs_t

SAMPLE_ATTEMPTS = 5000  # percentiles come from the most recent finished attempts


@dataclass(slots=True)
class TypeMetrics:
    total_jobs: int = 0
    finished_jobs: int = 0
    success_rate: float | None = None
    retry_count: int = 0
    avg_execution_ms: float | None = None
    by_status: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    dead_letter_depth: int = 0
    due_depth: int = 0
    oldest_due_age_s: float | None = None
    p50_execution_ms: float | None = None
    p95_execution_ms: float | None = None
    finished_last_minute: int = 0


@dataclass(slots=True)
class Metrics:
    generated_at: float
    overall: TypeMetrics
    per_type: dict[str, TypeMetrics]

    def to_dict(self) -> dict[str, Any]:
        return {"generated_at": clock.iso(self.generated_at), **asdict(self.overall),
                "per_type": {k: asdict(v) for k, v in self.per_type.items()}}


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    k = (len(sorted_values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def collect(db: Database) -> Metrics:
    now = clock.now()
    per: dict[str, TypeMetrics] = {}
    overall = TypeMetrics()
    j = jobs_t.c
    with db.read() as conn:
        by_status = conn.execute(
            select(j.job_type, j.status, func.count(),
                   func.sum(case((j.attempt_count > 1, j.attempt_count - 1), else_=0)))
            .group_by(j.job_type, j.status)
        ).all()
        due = conn.execute(
            select(j.job_type, func.count(), func.min(j.next_run_at))
            .where(j.status == PENDING, j.next_run_at <= now).group_by(j.job_type)
        ).all()
        recent = conn.execute(
            select(j.job_type, func.count()).where(j.finished_at >= now - 60)
            .group_by(j.job_type)
        ).all()
        avg = conn.execute(
            select(j.job_type, func.avg(attempts_t.c.duration_ms), func.count())
            .select_from(attempts_t.join(jobs_t, attempts_t.c.job_id == j.id))
            .where(attempts_t.c.duration_ms.is_not(None)).group_by(j.job_type)
        ).all()
        sample = conn.execute(
            select(j.job_type, attempts_t.c.duration_ms)
            .select_from(attempts_t.join(jobs_t, attempts_t.c.job_id == j.id))
            .where(attempts_t.c.finished_at.is_not(None), attempts_t.c.duration_ms.is_not(None))
            .order_by(attempts_t.c.finished_at.desc()).limit(SAMPLE_ATTEMPTS)
        ).all()

    def bucket(job_type: str) -> TypeMetrics:
        return per.setdefault(job_type, TypeMetrics())

    for job_type, status, count, retries in by_status:
        for m in (bucket(job_type), overall):
            m.by_status[status] = m.by_status.get(status, 0) + count
            m.total_jobs += count
            m.retry_count += int(retries or 0)
    for job_type, count, oldest in due:
        for m in (bucket(job_type), overall):
            m.due_depth += count
            age = max(0.0, now - oldest)
            m.oldest_due_age_s = max(m.oldest_due_age_s or 0.0, age)
    for job_type, count in recent:
        for m in (bucket(job_type), overall):
            m.finished_last_minute += count
    total_ms, total_n = 0.0, 0
    for job_type, mean, count in avg:
        bucket(job_type).avg_execution_ms = float(mean) if mean is not None else None
        total_ms += float(mean or 0) * count
        total_n += count
    overall.avg_execution_ms = total_ms / total_n if total_n else None
    durations: dict[str, list[float]] = {}
    for job_type, ms in sample:
        durations.setdefault(job_type, []).append(ms)
    everything = sorted(ms for values in durations.values() for ms in values)
    overall.p50_execution_ms = percentile(everything, 0.5)
    overall.p95_execution_ms = percentile(everything, 0.95)
    for job_type, values in durations.items():
        values.sort()
        bucket(job_type).p50_execution_ms = percentile(values, 0.5)
        bucket(job_type).p95_execution_ms = percentile(values, 0.95)
    for m in (overall, *per.values()):
        s = m.by_status
        m.finished_jobs = s[SUCCESS] + s[FAILED] + s[DEAD] + s[CANCELED]
        decided = s[SUCCESS] + s[FAILED] + s[DEAD]
        m.success_rate = s[SUCCESS] / decided if decided else None
        m.dead_letter_depth = s[DEAD]
    return Metrics(now, overall, dict(sorted(per.items())))


def finished_series(db: Database, *, buckets: int = 30, bucket_seconds: float = 10.0
                    ) -> tuple[list[int], list[int]]:
    """Jobs finished and attempts that failed, per interval, oldest first (sparklines)."""
    now = clock.now()
    start = now - buckets * bucket_seconds
    done = [0] * buckets
    failures = [0] * buckets
    with db.read() as conn:
        rows = conn.execute(
            select(attempts_t.c.finished_at, attempts_t.c.outcome)
            .where(attempts_t.c.finished_at >= start)
        ).all()
    for finished_at, outcome in rows:
        i = min(buckets - 1, int((finished_at - start) // bucket_seconds))
        if outcome == SUCCESS or outcome in (FAILED, DEAD):
            done[i] += 1
        if outcome not in (SUCCESS, "running"):
            failures[i] += 1
    return done, failures
