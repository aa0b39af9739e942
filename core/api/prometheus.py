"""Prometheus exposition, names prefixed `syncbridge_`, no job or entity id as a label.

- `DatabaseCollector` (the API's `/metrics`): the queue as the database holds it. The
  aggregates cost a scan at a million jobs (hundreds of ms to seconds), so a background
  thread refreshes a snapshot every SYNCBRIDGE_API_METRICS_REFRESH_SECONDS and a scrape
  serves the latest one (microseconds); `syncbridge_metrics_snapshot_age_seconds` says how
  stale it is. The thread starts with the server; a scrape before the first snapshot
  waits for it.
- `WorkerMetrics` (`syncbridge --worker-only --metrics-port N`): one worker's own
  in-process counters and histograms, fed by the worker's observer hooks.
"""

from __future__ import annotations

import logging
import queue as queue_mod
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select

from core import clock, metrics
from core.db import Database
from core.models import attempts_t, jobs_t, workers_t
from core.records import ClaimedJob, Completion
from core.statuses import AttemptOutcome

log = logging.getLogger("syncbridge.api.metrics")

EXECUTION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
START_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                 300.0, 3600.0)
_STALE = ("Snapshot of the database, refreshed every SYNCBRIDGE_API_METRICS_REFRESH_SECONDS "
          "(see syncbridge_metrics_snapshot_age_seconds).")


@dataclass(slots=True)
class Histo:
    buckets: list[tuple[str, float]] = field(default_factory=list)  # cumulative counts
    count: float = 0.0
    total: float = 0.0


@dataclass(slots=True)
class Snapshot:
    taken_at: float
    duration_s: float
    jobs: dict[tuple[str, str], int]  # (type, status) -> jobs
    dead: dict[str, int]
    due: dict[str, int]
    oldest_due: dict[str, float]
    attempts: dict[tuple[str, str], int]  # (outcome, error type) -> attempts
    execution: Histo
    enqueue_to_start: Histo
    workers: dict[str, int]  # state -> workers with a fresh heartbeat
    upstreams: list[Any] = field(default_factory=list)  # core.upstream_protection states


def _histogram(conn: Any, value: Any, bounds: Sequence[float], *where: Any) -> Histo:
    """Cumulative bucket counts in one pass (SUM(CASE ...) per bound)."""
    cols = [func.sum(case((value <= b, 1), else_=0)) for b in bounds]
    row = conn.execute(select(func.count(value), func.sum(value), *cols)
                       .where(value.is_not(None), *where)).one()
    n = int(row[0] or 0)
    h = Histo([(_le(b), float(row[2 + i] or 0)) for i, b in enumerate(bounds)], n,
              float(row[1] or 0.0))
    h.buckets.append(("+Inf", float(n)))
    return h


def _le(bound: float) -> str:
    return repr(float(bound))


def take_snapshot(db: Database, worker_fresh_seconds: float) -> Snapshot:
    t0 = time.perf_counter()
    m = metrics.collect(db)
    now = clock.now()
    a = attempts_t.c
    j = jobs_t.c
    with db.read() as conn:
        attempts = {(str(o), str(e or "")): int(n) for o, e, n in conn.execute(
            select(a.outcome, a.error_type, func.count()).group_by(a.outcome, a.error_type))}
        execution = _histogram(conn, a.duration_ms / 1000.0, EXECUTION_BUCKETS)
        # A job's first attempt: from enqueue (created_at) to the claim.
        first = (select((a.started_at - j.created_at).label("wait"))
                 .select_from(attempts_t.join(jobs_t, a.job_id == j.id))
                 .where(a.number == 1).subquery())
        start = _histogram(conn, first.c.wait, START_BUCKETS)
        workers = {str(s): int(n) for s, n in conn.execute(
            select(workers_t.c.state, func.count())
            .where(workers_t.c.last_seen_at >= now - worker_fresh_seconds,
                   workers_t.c.state != "stopped")
            .group_by(workers_t.c.state))}
    jobs: dict[tuple[str, str], int] = {}
    for job_type, tm in m.per_type.items():
        for status, n in tm.by_status.items():
            jobs[(job_type, status)] = n
    return Snapshot(
        taken_at=now, duration_s=time.perf_counter() - t0, jobs=jobs,
        dead={t: tm.dead_letter_depth for t, tm in m.per_type.items()},
        due={t: tm.due_depth for t, tm in m.per_type.items()},
        oldest_due={t: tm.oldest_due_age_s or 0.0 for t, tm in m.per_type.items()},
        attempts=attempts, execution=execution, enqueue_to_start=start, workers=workers,
        upstreams=m.upstreams)


class DatabaseCollector(Collector):
    def __init__(self, db: Database, *, refresh_seconds: float,
                 worker_fresh_seconds: float) -> None:
        self.db = db
        self.refresh_seconds = refresh_seconds
        self.worker_fresh_seconds = worker_fresh_seconds
        self._snapshot: Snapshot | None = None
        self._error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> None:
        try:
            snap = take_snapshot(self.db, self.worker_fresh_seconds)
        except Exception as exc:  # the last snapshot stays; the next refresh tries again
            self._error = type(exc).__name__
            log.warning("metrics snapshot failed: %s", type(exc).__name__)
            return
        self._snapshot, self._error = snap, None

    def _loop(self) -> None:
        while True:
            self.refresh()
            self._ready.set()
            if self._stop.wait(self.refresh_seconds):
                return

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name="syncbridge-metrics")
                self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def describe(self) -> Iterable[Any]:
        return []  # the families depend on the data; collected at scrape time only

    def collect(self) -> Iterable[Any]:
        if self._snapshot is None:
            self.start()  # normally started with the server; the first snapshot is awaited
            self._ready.wait(120)
        snap = self._snapshot
        up = GaugeMetricFamily("syncbridge_metrics_snapshot_ok",
                               "1 when the last refresh of the snapshot succeeded.")
        up.add_metric([], 0.0 if self._error or snap is None else 1.0)
        yield up
        if snap is None:
            return
        age = GaugeMetricFamily("syncbridge_metrics_snapshot_age_seconds",
                                "Seconds since the database snapshot these metrics come from "
                                "was taken.")
        age.add_metric([], max(0.0, clock.now() - snap.taken_at))
        yield age
        took = GaugeMetricFamily("syncbridge_metrics_snapshot_duration_seconds",
                                 "Seconds the last database snapshot took to compute.")
        took.add_metric([], snap.duration_s)
        yield took
        jobs = GaugeMetricFamily("syncbridge_jobs", f"Jobs by type and status. {_STALE}",
                                 labels=["job_type", "status"])
        for (t, s), n in sorted(snap.jobs.items()):
            jobs.add_metric([t, s], n)
        yield jobs
        for name, doc, values in (
            ("syncbridge_dead_letter_jobs", "Dead jobs (the dead-letter queue) by type.",
             snap.dead),
            ("syncbridge_due_jobs", "Pending jobs whose run time has come, by type.", snap.due),
            ("syncbridge_oldest_due_age_seconds",
             "Age of the oldest due pending job by type (0 when none).", snap.oldest_due),
        ):
            g = GaugeMetricFamily(name, f"{doc} {_STALE}", labels=["job_type"])
            for t, v in sorted(values.items()):
                g.add_metric([t], v)
            yield g
        c = CounterMetricFamily("syncbridge_attempts",
                                f"Ended attempts by outcome and error type. {_STALE}",
                                labels=["outcome", "error_type"])
        for (o, e), n in sorted(snap.attempts.items()):
            c.add_metric([o, e], n)
        yield c
        for name, doc, h in (
            ("syncbridge_attempt_execution_seconds", "Execution time of ended attempts.",
             snap.execution),
            ("syncbridge_enqueue_to_start_seconds",
             "Time from a job's enqueue to the start of its first attempt.",
             snap.enqueue_to_start),
        ):
            hf = HistogramMetricFamily(name, f"{doc} {_STALE}")
            hf.add_metric([], h.buckets, h.total)
            yield hf
        w = GaugeMetricFamily("syncbridge_workers",
                              f"Workers with a fresh heartbeat, by state. {_STALE}",
                              labels=["state"])
        for state in ("running", "paused", "starting", "stopping"):
            w.add_metric([state], snap.workers.get(state, 0))
        yield w
        yield from _upstream_families(snap.upstreams)


_UPSTREAM_STATES = ("closed", "open", "half_open", "paused")


def _upstream_families(states: Sequence[Any]) -> Iterable[Any]:
    """Upstream protection (core.upstream_protection): one 1 per upstream in its state."""
    st = GaugeMetricFamily("syncbridge_upstream_state",
                           f"1 for the upstream's current state (paused wins). {_STALE}",
                           labels=["upstream", "state"])
    for s in states:
        for name in _UPSTREAM_STATES:
            st.add_metric([s.name, name], 1.0 if s.state == name else 0.0)
    yield st
    for metric, doc, attr in (
        ("syncbridge_upstream_rate", "Allowed jobs per second (configured or adaptive; "
         "absent when unlimited).", "current_rate"),
        ("syncbridge_upstream_in_flight", "Running jobs calling the upstream.", "in_flight"),
        ("syncbridge_upstream_waiting", "Pending jobs calling the upstream.", "waiting"),
        ("syncbridge_upstream_recent_429", "429 answers in the current minute window.",
         "recent_429"),
        ("syncbridge_upstream_recent_5xx", "Retryable failures in the current minute window.",
         "recent_5xx"),
    ):
        g = GaugeMetricFamily(metric, f"{doc} {_STALE}", labels=["upstream"])
        for s in states:
            value = getattr(s, attr)
            if value is not None:
                g.add_metric([s.name], float(value))
        yield g


# --- the headless worker's own metrics --------------------------------------------------------

class WorkerMetrics:
    """Counters and histograms of one worker process, exposed on 127.0.0.1:port."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.registry = CollectorRegistry()
        self.attempts = Counter("syncbridge_worker_attempts",
                                "Attempts this worker process ended, by job type, outcome and "
                                "error type.", ["job_type", "outcome", "error_type"],
                                registry=self.registry)
        self.execution = Histogram("syncbridge_worker_execution_seconds",
                                   "Execution time of this worker's attempts.", ["job_type"],
                                   buckets=EXECUTION_BUCKETS, registry=self.registry)
        self.enqueue_to_start = Histogram(
            "syncbridge_worker_enqueue_to_start_seconds",
            "Time from enqueue to the start of a job's first attempt, for the jobs this "
            "worker claimed (looked up after the claim, off the worker's loop).",
            ["job_type"], buckets=START_BUCKETS, registry=self.registry)
        self._types: dict[int, str] = {}
        self._firsts: queue_mod.SimpleQueue[list[tuple[int, str, float]]] = \
            queue_mod.SimpleQueue()
        threading.Thread(target=self._lookup_loop, daemon=True,
                         name="syncbridge-worker-metrics").start()

    # The worker's hooks (called on its event loop: no I/O here).
    def claimed(self, jobs: Sequence[ClaimedJob]) -> None:
        firsts = []
        for job in jobs:
            self._types[job.id] = job.job_type
            if job.attempt_count == 1:
                firsts.append((job.id, job.job_type, job.claimed_at))
        if firsts:
            self._firsts.put(firsts)

    def completed(self, c: Completion, applied: bool) -> None:
        job_type = self._types.pop(c.job_id, "unknown")
        if applied:
            outcome, error_type = c.outcome, c.error_type or ""
        else:
            outcome, error_type = AttemptOutcome.LEASE_LOST, "LeaseLost"
        self.attempts.labels(job_type, outcome, error_type).inc()
        self.execution.labels(job_type).observe(c.duration_ms / 1000.0)

    def _lookup_loop(self) -> None:
        while True:
            batch = self._firsts.get()
            try:
                while len(batch) < 1000:
                    batch += self._firsts.get_nowait()
            except queue_mod.Empty:
                pass
            try:
                with self.db.read() as conn:
                    created = dict(conn.execute(select(jobs_t.c.id, jobs_t.c.created_at)
                                                .where(jobs_t.c.id.in_([b[0] for b in batch]))
                                                ).all())
            except Exception as exc:
                log.warning("enqueue-to-start lookup failed: %s", type(exc).__name__)
                continue
            for job_id, job_type, claimed_at in batch:
                if job_id in created:
                    self.enqueue_to_start.labels(job_type).observe(
                        max(0.0, claimed_at - float(created[job_id])))

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
