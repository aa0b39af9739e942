"""core.metrics against a plain recomputation from every row, on both databases: the
index-shaped queries (SQLite's totals-minus-the-rest, the per-type split of the last
minute, the sparkline buckets counted in SQL) give the figures the definitions say."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from core import clock, metrics
from core.db import Database
from core.models import attempts_t, jobs_t
from core.statuses import FINISHED_STATUSES, STATUSES

NOW = 1_800_000_000.0
TYPES = ("customer", "invoice", "contact")


def _seed(db: Database, n: int = 600) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rng = random.Random(5)
    jobs, attempts = [], []
    for i in range(1, n + 1):
        status = rng.choice(STATUSES + ("success",) * 4)
        count = 0 if status == "pending" else rng.choice((1, 1, 1, 2, 3, 4))
        finished = NOW - rng.uniform(0, 120) if status in FINISHED_STATUSES else None
        jobs.append(dict(
            id=i, job_type=rng.choice(TYPES), entity_id=f"e_{i}", status=status,
            payload=None, result=None, correlation_id=f"c{i}", attempt_count=count,
            max_attempts=4, next_run_at=NOW + rng.uniform(-50, 50), lease_token=count,
            is_replay=False, created_at=NOW - 200, updated_at=NOW - 1, finished_at=finished,
            lease_owner="w" if status == "running" else None))
        ended = count - 1 if status == "running" else count  # the one in flight has no row
        for k in range(1, ended + 1):
            end = (finished if k == ended and finished else NOW - rng.uniform(0, 400))
            attempts.append(dict(
                job_id=i, number=k, worker_id="w", started_at=end - 0.1, finished_at=end,
                duration_ms=rng.uniform(1, 500),
                outcome=status if k == ended and status != "running" else "retry"))
    with db.write() as conn:
        conn.execute(jobs_t.insert(), jobs)
        conn.execute(attempts_t.insert(), attempts)
    return jobs, attempts


@pytest.fixture
def seeded(db: Database) -> tuple[Database, list[dict[str, Any]], list[dict[str, Any]]]:
    clock.set_clock(lambda: NOW)
    jobs, attempts = _seed(db)
    return db, jobs, attempts


def test_counts_retries_due_and_last_minute_are_exact(seeded: Any) -> None:
    db, jobs, attempts = seeded
    m = metrics.collect(db)
    assert m.overall.total_jobs == len(jobs)
    assert m.overall.by_status == dict(Counter(j["status"] for j in jobs)) | {
        s: 0 for s in STATUSES if s not in {j["status"] for j in jobs}}
    assert m.overall.retry_count == sum(max(0, j["attempt_count"] - 1) for j in jobs)
    due = [j for j in jobs if j["status"] == "pending" and j["next_run_at"] <= NOW]
    assert m.overall.due_depth == len(due)
    recent = [j for j in jobs if j["finished_at"] is not None and j["finished_at"] >= NOW - 60]
    assert m.overall.finished_last_minute == len(recent)
    for job_type in TYPES:
        mine = [j for j in jobs if j["job_type"] == job_type]
        t = m.per_type[job_type]
        assert t.total_jobs == len(mine)
        for status in STATUSES:
            assert t.by_status[status] == sum(j["status"] == status for j in mine), status
        assert t.retry_count == sum(max(0, j["attempt_count"] - 1) for j in mine)
        assert t.finished_last_minute == sum(j in recent for j in mine)
        assert t.due_depth == sum(j in due for j in mine)
    sample = sorted(attempts, key=lambda a: a["finished_at"])[-metrics.SAMPLE_ATTEMPTS:]
    durations = sorted(a["duration_ms"] for a in sample)
    assert m.overall.avg_execution_ms == pytest.approx(sum(durations) / len(durations))
    assert m.overall.p50_execution_ms == pytest.approx(metrics.percentile(durations, 0.5))


def test_last_minute_per_type_is_split_from_the_newest_when_there_are_many(
        seeded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    db, jobs, _ = seeded
    monkeypatch.setattr(metrics, "RECENT_SAMPLE", 20)
    m = metrics.collect(db)
    recent = [j for j in jobs if j["finished_at"] is not None and j["finished_at"] >= NOW - 60]
    assert len(recent) > 20
    assert m.overall.finished_last_minute == len(recent)  # the total stays exact
    assert sum(t.finished_last_minute for t in m.per_type.values()) == len(recent)
    newest = sorted(recent, key=lambda j: j["finished_at"])[-20:]
    for job_type, t in m.per_type.items():
        share = sum(j["job_type"] == job_type for j in newest) / 20
        assert abs(t.finished_last_minute - share * len(recent)) <= 1


def test_finished_series_buckets(seeded: Any) -> None:
    db, _, attempts = seeded
    done, failures = metrics.finished_series(db, buckets=30, bucket_seconds=10.0)
    start = NOW - 300
    want_done, want_fail = [0] * 30, [0] * 30
    for a in attempts:
        if a["finished_at"] < start:
            continue
        i = min(29, int((a["finished_at"] - start) // 10))
        want_done[i] += a["outcome"] in ("success", "failed", "dead")
        want_fail[i] += a["outcome"] not in ("success", "running")
    assert (done, failures) == (want_done, want_fail)
