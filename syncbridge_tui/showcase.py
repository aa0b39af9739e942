"""A deterministic demo database for snapshot tests and screenshots.

Every row is written through core's own API (enqueue, claim, complete, retry/replay/cancel,
heartbeats) under a stepped fixed clock, with fixed correlation and worker ids, so two runs
produce byte-identical screens. `SHOWCASE_NOW` is the clock the console is shown at.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from core import clock, completion, enqueue, heartbeats, leases, operator_actions, schedules
from core import upstream_protection as up
from core.config import Settings
from core.db import Database
from core.demo import registry
from core.records import Completion, WorkerInfo
from core.schedules import Schedule, make_schedule

SHOWCASE_START = 1_768_467_600.0  # 2026-01-15 09:00:00 UTC
WORKER_ID = "ops-1:4242:a1b2c3"
OTHER_WORKER_ID = "ops-2:977:d4e5f6"

# Error messages an upstream could send; the console must show them literally.
EVIL_ENTITY = "c_[bold red]pwn[/]"
EVIL_MESSAGE = ("[bold red]BOOM[/] \x1b[31mred?\x1b[0m [link=https://evil.example]click me"
                "[/link] \x07bell \x1b]0;title\x07 :warning: end")

# Recurring schedules the showcase app declares: one whose last slot made a job, one whose
# last slot was skipped (its previous job still active), one that never ran yet.
# Upstream protection: a rate limit on crm (the showcase's settings), and a third upstream,
# `ledger`, that another app on the same database calls (its workers recorded it).
SHOWCASE_UPSTREAM_LIMITS = '{"crm": {"rate": 20, "max_in_flight": 4}}'
LEDGER_TYPES = {"ledger_post": ("ledger",)}

SHOWCASE_SCHEDULES: list[Schedule] = [
    make_schedule("customers-hourly", "customer", every="1h", entity_id="c_2040"),
    make_schedule("invoices-nightly", "invoice", cron="0 2 * * *", entity_id="i_flaky"),
    make_schedule("weekly-report", "customer", cron="30 6 * * 1", entity_id="c_report"),
]


@dataclass(slots=True)
class _Clock:
    t: float

    def __call__(self) -> float:
        return self.t

    def step(self, seconds: float) -> float:
        self.t += seconds
        return self.t


@contextmanager
def _fixed_ids(prefix: str) -> Iterator[None]:
    """Replays mint a random correlation id; pin them for byte-identical screens."""
    counter = iter(range(1, 1000))
    original = enqueue.new_correlation_id
    enqueue.new_correlation_id = lambda: f"{prefix}{next(counter):04d}".ljust(32, "0")
    try:
        yield
    finally:
        enqueue.new_correlation_id = original


class _Seeder:
    def __init__(self, db: Database, settings: Settings, clk: _Clock) -> None:
        self.db, self.settings, self.clk = db, settings, clk
        self.n = 0

    def enqueue(self, job_type: str, entity: str) -> int:
        self.n += 1
        cid = f"{self.n:04x}c0ffee{self.n:02d}".ljust(32, "a")
        r = enqueue.enqueue(self.db, job_type, entity, known_types=registry.names(),
                          max_attempts=self.settings.max_attempts, correlation_id=cid)
        return r.job_id

    def attempt(self, job_id: int, outcome: str, duration_ms: float, *,
                error: tuple[str, str, int | None] | None = None,
                retry_in: float = 1.0, worker: str = WORKER_ID) -> None:
        claimed = leases.claim(self.db, worker, 1, lease_seconds=30,
                              job_types=registry.names())
        assert claimed and claimed[0].id == job_id, (claimed, job_id)
        job = claimed[0]
        started = self.clk.t
        finished = self.clk.step(duration_ms / 1000)
        error_type, message, http = error or (None, None, None)
        c = Completion(job.id, job.lease_token, worker, outcome, started, finished, duration_ms,
                       result={"synced": True} if outcome == "success" else None,
                       error_type=error_type, error_message=message, http_status=http,
                       next_run_at=finished + retry_in if outcome == "retry" else None)
        assert completion.complete(self.db, [c]) == [True]
        self.clk.step(1.5 if outcome == "retry" else 0.4)


def seed_showcase(db: Database, settings: Settings, *, untrusted: bool = False) -> float:
    """Write the demo history; returns the time the console should be shown at."""
    clk = _Clock(SHOWCASE_START)
    previous: Any = clock.now
    clock.set_clock(clk)
    try:
        s = _Seeder(db, settings, clk)
        rate = ("UpstreamRateLimited", 'Billing answered 429: {"error": "rate limited"}', 429)
        busy = ("UpstreamTimeout", 'CRM answered 503: {"error": "CRM temporarily '
                'unavailable"}', 503)
        s.attempt(s.enqueue("customer", "c_1001"), "success", 84.2)
        s.attempt(s.enqueue("invoice", "i_2001"), "success", 121.7)
        flaky = s.enqueue("customer", "c_flaky")
        s.attempt(flaky, "retry", 35.1, error=busy)
        s.attempt(flaky, "retry", 33.8, error=busy)
        s.attempt(flaky, "success", 92.4)
        for entity, job_type in (("c_1002", "customer"), ("i_2002", "invoice")):
            dead = s.enqueue(job_type, entity)
            for _ in range(settings.max_attempts - 1):
                s.attempt(dead, "retry", 48.0, error=rate, retry_in=1.0)
            s.attempt(dead, "dead", 51.3, error=rate)
        s.attempt(s.enqueue("customer", "c_missing"), "failed", 22.5,
                  error=("NotFound", 'CRM answered 404: {"error": "customer c_missing not '
                                     'found"}', 404))
        s.attempt(s.enqueue("customer", "c_invalid"), "failed", 19.9,
                  error=("ValidationError", "CRM customer failed validation: email: value "
                                            "is not a valid email address", None))
        if untrusted:
            evil = s.enqueue("customer", EVIL_ENTITY)
            for _ in range(settings.max_attempts - 1):
                s.attempt(evil, "retry", 12.0, error=("UpstreamTimeout", EVIL_MESSAGE, 503))
            s.attempt(evil, "dead", 12.0, error=("UpstreamTimeout", EVIL_MESSAGE, 503))
        flaky_invoice = s.enqueue("invoice", "i_flaky")
        s.attempt(flaky_invoice, "retry", 30.2, error=busy)
        canceled = s.enqueue("customer", "c_3001")
        operator_actions.cancel(db, canceled, actor="operator")
        with _fixed_ids("feed"):
            operator_actions.replay(db, 4, actor="operator")  # job 4 is c_1002, dead
        clk.step(0.5)
        # Left running: claimed by a second worker that is still beating.
        leases.claim(db, OTHER_WORKER_ID, 1, lease_seconds=30, job_types=["customer"])
        # The hourly schedule's 09:00 slot enqueues c_2040 (so the enqueue below is a
        # duplicate); the nightly one's 02:00 slot is skipped: i_flaky is still pending.
        pinned = schedules.new_correlation_id
        schedules.new_correlation_id = lambda: "5c4ed01e".ljust(32, "0")
        try:
            schedules.tick(db, SHOWCASE_SCHEDULES[:2], max_attempts=settings.max_attempts)
        finally:
            schedules.new_correlation_id = pinned
        s.enqueue("customer", "c_2040")
        s.enqueue("invoice", "i_2050")
        seed_upstreams(db, settings, flaky=flaky)
        now = clk.step(0.8)
        heartbeats.record_heartbeat(db, WorkerInfo(WORKER_ID, "ops-1", 4242, SHOWCASE_START - 60,
                                              now - 1.2, "running", 8, 0, 31))
        heartbeats.record_heartbeat(db, WorkerInfo(OTHER_WORKER_ID, "ops-2", 977,
                                              SHOWCASE_START - 30, now - 0.6, "running", 4,
                                              1, 12))
        heartbeats.record_heartbeat(db, WorkerInfo("ops-3:1310:0badf0", "ops-3", 1310,
                                              SHOWCASE_START - 900, now - 240.0, "running",
                                              8, 0, 204))
        heartbeats.record_heartbeat(db, WorkerInfo("ops-1:4100:9e9e9e", "ops-1", 4100,
                                              SHOWCASE_START - 4000, now - 3000.0, "stopped",
                                              8, 0, 1780))
        return now
    finally:
        clock.set_clock(previous)


def seed_upstreams(db: Database, settings: Settings, *, flaky: int) -> None:
    """What the workers' attempts told core.upstream_protection (recorded through its own
    Protection, as a worker does): crm's 503s that a success cleared (closed; its rate limit
    is configured), five failures in a row that opened billing's breaker a moment ago; and
    an operator's 15-minute pause of ledger. At one instant: the clock the other scenes
    are shown at stays as it was."""
    policy = up.Policy.from_settings(settings, environ={})
    demo = up.type_upstreams(registry)
    worker = up.Protection(db, policy, demo, WORKER_ID)
    worker.start()
    crm = [up.Observation("crm", "failure", flaky), up.Observation("crm", "failure", flaky),
           up.Observation("crm", "ok", flaky)]
    for obs in crm:
        worker.record([obs])
    for _ in range(policy.breaker_failures):
        worker.record([up.Observation("billing", "failure", 9)])
    up.ensure_rows(db, ["ledger"], policy.cooldown_seconds, LEDGER_TYPES)
    up.pause(db, "ledger", 900, actor="operator", known=["ledger"])


def showcase_log_events(at: float) -> list[dict[str, Any]]:
    """Log lines as the embedded worker writes them (structlog event dicts)."""
    def ts(offset: float) -> str:
        return (clock.iso(at - offset) or "").replace("+00:00", "Z")

    base = {"worker_id": WORKER_ID}
    return [
        {**base, "event": "worker.started", "level": "info", "timestamp": ts(30),
         "concurrency": 8, "database": "sqlite:///syncbridge.db"},
        {**base, "event": "attempt.finished", "level": "info", "timestamp": ts(25), "job_id": 1,
         "attempt": 1, "job_type": "customer", "entity_id": "c_1001", "outcome": "success",
         "duration_ms": 84.2, "correlation_id": "0001c0ffee01aaaaaaaaaaaaaaaaaaaa"},
        {**base, "event": "attempt.finished", "level": "warning", "timestamp": ts(20),
         "job_id": 4, "attempt": 4, "job_type": "customer", "entity_id": "c_1002",
         "outcome": "dead", "error_type": "UpstreamRateLimited", "http_status": 429,
         "error": 'Billing answered 429: {"error": "rate limited"}',
         "correlation_id": "0004c0ffee04aaaaaaaaaaaaaaaaaaaa"},
        {**base, "event": "attempt.finished", "level": "warning", "timestamp": ts(12),
         "job_id": 6, "attempt": 1, "job_type": "customer", "entity_id": "c_missing",
         "outcome": "failed", "error_type": "NotFound", "http_status": 404,
         "error": EVIL_MESSAGE, "correlation_id": "0006c0ffee06aaaaaaaaaaaaaaaaaaaa"},
        {**base, "event": "lease.recovered", "level": "warning", "timestamp": ts(5),
         "job_id": 9, "status": "pending"},
    ]
