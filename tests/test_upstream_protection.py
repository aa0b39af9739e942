"""Upstream protection (issue 11) on SQLite and PostgreSQL: the breaker's state machine
(open, half-open with one probe fleet-wide, close, reopen with a doubling cool-down, probe
lease expiry), token-bucket and in-flight admission, AIMD, Retry-After pauses, manual
controls with their audit rows, and hold reasons. A fake clock drives time."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select, update

import core.enqueue
from core import clock, completion
from core.config import SettingsError, load_settings
from core.db import Database
from core.models import audit_t, jobs_t, upstreams_t
from core.records import ClaimedJob, Completion
from core.upstream_protection import (
    Limit,
    Observation,
    Policy,
    Protection,
    UnknownUpstream,
    hold_reasons,
    limits_from,
    open_breaker,
    pause,
    reset,
    resume,
    states,
)

TYPES = {"customer": ("crm", "billing"), "invoice": ("crm",)}
T0 = 1_000_000.0


@pytest.fixture
def now() -> Iterator[list[float]]:
    t = [T0]
    clock.set_clock(lambda: t[0])
    yield t
    clock.set_clock(None)


def enqueue(db: Database, job_type: str, n: int, prefix: str = "e") -> list[int]:
    res = core.enqueue.enqueue_many(db, job_type, [f"{prefix}{i}" for i in range(n)],
                                    known_types=list(TYPES), max_attempts=5)
    return [r.job_id for r in res]


def make(db: Database, worker: str = "w1", **policy: object) -> Protection:
    p = Protection(db, Policy(**policy), TYPES, worker)  # type: ignore[arg-type]
    p.start()
    return p


def claim(p: Protection, n: int = 100, types: tuple[str, ...] = ("customer", "invoice")
          ) -> list[ClaimedJob]:
    return p.claim(p.worker_id, n, lease_seconds=30, job_types=list(types))


def finish(db: Database, jobs: list[ClaimedJob]) -> None:
    now = clock.now()
    completion.complete(db, [Completion(j.id, j.lease_token, "w", "success", now, now, 1.0)
                             for j in jobs])


def row(db: Database, name: str) -> dict[str, object]:
    with db.read() as conn:
        r = conn.execute(select(upstreams_t).where(upstreams_t.c.name == name)).one()
    return dict(r._mapping)


def fail(p: Protection, upstream: str, job_ids: list[int]) -> None:
    p.record([Observation(upstream, "failure", j) for j in job_ids])


def test_breaker_opens_probes_once_reopens_doubling_and_closes(db: Database,
                                                              now: list[float]) -> None:
    a, b = make(db, "wa", breaker_failures=3), make(db, "wb", breaker_failures=3)
    enqueue(db, "customer", 20)
    first = claim(a, 4)
    fail(a, "billing", [j.id for j in first[:2]])
    assert row(db, "billing")["state"] == "closed"  # 2 < 3
    fail(a, "billing", [first[2].id])
    r = row(db, "billing")
    assert r["state"] == "open" and r["next_probe_at"] == T0 + 5.0
    assert claim(b) == [] and claim(a) == []  # held: no attempt opened
    now[0] += 4.9
    assert claim(b) == []
    now[0] += 0.2
    probe = claim(b)
    assert len(probe) == 1 and claim(a) == [] and claim(b) == []  # exactly one probe
    r = row(db, "billing")
    assert (r["state"], r["probe_owner"], r["probe_job_id"]) == ("half_open", "wb",
                                                                 probe[0].id)
    b.record([Observation("billing", "failure", probe[0].id)])
    r = row(db, "billing")
    assert r["state"] == "open" and r["cooldown_seconds"] == 10.0  # doubled
    assert r["next_probe_at"] == pytest.approx(now[0] + 10.0)
    for expected in (20.0, 40.0, 60.0, 60.0):  # doubling, capped at 60
        now[0] += 61
        (p,) = claim(a)
        a.record([Observation("billing", "failure", p.id)])
        assert row(db, "billing")["cooldown_seconds"] == expected
    now[0] += 61
    (p,) = claim(a)
    a.record([Observation("billing", "ok", p.id), Observation("crm", "ok", p.id)])
    r = row(db, "billing")
    assert (r["state"], r["failures"], r["cooldown_seconds"]) == ("closed", 0, 5.0)
    assert len(claim(b)) > 1


def test_failures_outside_the_window_do_not_open(db: Database, now: list[float]) -> None:
    p = make(db, breaker_failures=3, window_seconds=10)
    enqueue(db, "invoice", 5)
    jobs = claim(p)
    fail(p, "crm", [jobs[0].id, jobs[1].id])
    now[0] += 11
    fail(p, "crm", [jobs[2].id])
    assert row(db, "crm")["state"] == "closed"
    p.record([Observation("crm", "ok", jobs[3].id)])  # a success resets the count
    fail(p, "crm", [jobs[4].id])
    assert row(db, "crm")["failures"] == 1


def test_probe_lost_with_its_worker_is_given_up_after_its_lease(db: Database,
                                                              now: list[float]) -> None:
    a = make(db, "wa", breaker_failures=1, probe_lease_seconds=3)
    b = make(db, "wb", breaker_failures=1, probe_lease_seconds=3)
    enqueue(db, "invoice", 3)
    (j,) = claim(a, 1)
    fail(a, "crm", [j.id])
    now[0] += 5.1
    (probe,) = claim(a)  # wa takes the probe, then "dies": it never reports
    assert claim(b) == []
    now[0] += 2.9
    assert claim(b) == [] and row(db, "crm")["state"] == "half_open"
    now[0] += 0.2
    (probe2,) = claim(b)
    assert probe2.id != probe.id and row(db, "crm")["probe_owner"] == "wb"
    # The lost probe's late report changes nothing: it is no longer the probe.
    a.record([Observation("crm", "failure", probe.id)])
    assert row(db, "crm")["state"] == "half_open"
    b.record([Observation("crm", "ok", probe2.id)])
    assert row(db, "crm")["state"] == "closed"


def test_probe_renewal_keeps_it(db: Database, now: list[float]) -> None:
    a = make(db, "wa", breaker_failures=1, probe_lease_seconds=3)
    b = make(db, "wb", breaker_failures=1, probe_lease_seconds=3)
    enqueue(db, "invoice", 3)
    (j,) = claim(a, 1)
    fail(a, "crm", [j.id])
    now[0] += 5.1
    claim(a)
    now[0] += 2.0
    a.renew_probes(3)
    now[0] += 2.0
    assert claim(b) == []


def test_token_bucket_is_shared_and_unused_tokens_stay(db: Database, now: list[float]) -> None:
    a = make(db, "wa", limits={"crm": Limit(rate=40)})
    b = make(db, "wb", limits={"crm": Limit(rate=40)})
    enqueue(db, "invoice", 100)
    assert len(claim(a)) == 10  # a full bucket: 40/s * 0.25 s
    assert claim(b) == []
    now[0] += 0.125
    assert len(claim(b, 2)) == 2  # 5 tokens refilled, 2 taken, 3 kept
    assert len(claim(a)) == 3
    now[0] += 10
    assert len(claim(a)) == 10  # capped at the burst, however long it waited


def test_in_flight_limit_counts_the_fleet(db: Database, now: list[float]) -> None:
    a = make(db, "wa", limits={"billing": Limit(max_in_flight=3)})
    b = make(db, "wb", limits={"billing": Limit(max_in_flight=3)})
    enqueue(db, "customer", 10)
    enqueue(db, "invoice", 4, "i")
    first = claim(a, 2, ("customer",))
    assert len(first) == 2
    assert len(claim(b, 10, ("customer",))) == 1
    assert claim(a, 10, ("customer",)) == []
    # invoice does not call billing: not held back by it.
    assert len(claim(b, 10, ("invoice",))) == 4
    finish(db, first)
    assert len(claim(a, 10, ("customer",))) == 2


def test_a_type_is_held_by_any_of_its_upstreams(db: Database, now: list[float]) -> None:
    p = make(db)
    enqueue(db, "customer", 3)
    enqueue(db, "invoice", 3, "i")
    open_breaker(db, "billing", actor="t", known=["crm", "billing"])
    got = claim(p)
    assert {j.job_type for j in got} == {"invoice"} and len(got) == 3
    with db.read() as conn:
        pending = list(conn.execute(select(jobs_t).where(jobs_t.c.status == "pending")))
    reasons = hold_reasons(db, pending, upstreams_by_type=TYPES)
    assert set(reasons.values()) == {"held: billing open"} and len(reasons) == 3


def test_retry_after_pauses_the_upstream_for_the_fleet(db: Database, now: list[float]) -> None:
    # A configured rate (not binding here): no adaptive cut, the pause alone.
    limits = {"billing": Limit(rate=1000)}
    a, b = make(db, "wa", limits=limits), make(db, "wb", limits=limits)
    enqueue(db, "customer", 5)
    (j,) = claim(a, 1)
    a.record([Observation("billing", "rate_limited", j.id, retry_after=2.0)])
    r = row(db, "billing")
    assert r["paused_until"] == T0 + 2.0 and r["recent_429"] == 1
    now[0] += 0.2  # past the state cache
    assert claim(b) == []
    with db.read() as conn:
        pending = list(conn.execute(select(jobs_t).where(jobs_t.c.status == "pending")))
    assert set(hold_reasons(db, pending, upstreams_by_type=TYPES).values()) == {
        "held: billing paused 2s"}
    now[0] += 1.9
    assert len(claim(b)) == 4


def test_aimd_cuts_on_429_and_grows_on_success(db: Database, now: list[float]) -> None:
    p = make(db)
    enqueue(db, "invoice", 60)
    jobs = claim(p, 20)
    now[0] += 0.5
    finish(db, jobs)  # 20 attempts finished within the last second: 20/s observed
    (j,) = claim(p, 1)
    p.record([Observation("crm", "rate_limited", j.id, retry_after=None)] * 3)
    cut = row(db, "crm")["rate"]
    assert cut == pytest.approx(20 * 0.7)  # once: the other 429s came during the pause
    assert row(db, "crm")["paused_until"] == pytest.approx(now[0] + 1.0)
    now[0] += 1.1
    p.record([Observation("crm", "ok", k.id) for k in jobs[:14]])
    grown = row(db, "crm")["rate"]
    assert isinstance(grown, float) and isinstance(cut, float)
    assert grown == pytest.approx(cut + 14 * 1.0 / cut, rel=0.01)  # about +1/s after 1 s
    p.record([Observation("crm", "rate_limited", j.id, retry_after=None)])
    assert row(db, "crm")["rate"] == pytest.approx(grown * 0.7)
    # The adaptive rate is enforced with a bucket, emptied by the cut.
    now[0] += 0.5
    assert claim(p, 100) == []  # paused 1 s (a 429 without Retry-After)
    now[0] += 0.6  # 0.1 s after the pause: the bucket restarted empty when it ended
    rate = row(db, "crm")["rate"]
    assert isinstance(rate, float)
    assert len(claim(p, 100)) == int(0.1 * rate)
    now[0] += 10
    assert len(claim(p, 100)) == int(rate * 0.25)  # a full bucket of the adaptive rate
    assert claim(p, 100) == []


def test_manual_controls_are_audited_and_refuse_unknown(db: Database,
                                                        now: list[float]) -> None:
    p = make(db)
    enqueue(db, "invoice", 2)
    known = ["crm", "billing"]
    pause(db, "crm", 30, actor="ops", known=known)
    now[0] += 0.2
    assert claim(p) == []
    resume(db, "crm", actor="ops", known=known)
    open_breaker(db, "crm", actor="ops", known=known)
    now[0] += 0.2
    assert claim(p) == []
    reset(db, "crm", actor="ops", known=known)
    now[0] += 0.2
    assert len(claim(p)) == 2
    with pytest.raises(UnknownUpstream, match="unknown upstream 'nope'"):
        pause(db, "nope", 5, actor="ops", known=known)
    with db.read() as conn:
        rows = conn.execute(select(audit_t.c.action, audit_t.c.job_id, audit_t.c.upstream,
                                   audit_t.c.actor).order_by(audit_t.c.id)).all()
    assert [tuple(r) for r in rows] == [
        ("upstream.pause", None, "crm", "ops"), ("upstream.resume", None, "crm", "ops"),
        ("upstream.open", None, "crm", "ops"), ("upstream.reset", None, "crm", "ops")]


def test_states_are_typed_records(db: Database, now: list[float]) -> None:
    p = make(db, limits={"billing": Limit(rate=50, max_in_flight=4)})
    enqueue(db, "customer", 6)
    claim(p, 2)
    pause(db, "crm", 10, actor="ops", known=["crm", "billing"])
    got = {s.name: s for s in states(db, policy=p.policy, upstreams_by_type=TYPES)}
    assert got["crm"].state == "paused" and got["crm"].paused_until == T0 + 10
    b = got["billing"]
    assert (b.state, b.configured_rate, b.max_in_flight, b.in_flight, b.waiting) == (
        "closed", 50, 4, 2, 4)


def test_protection_off_claims_through_everything(db: Database, now: list[float]) -> None:
    p = make(db, enabled=False)
    enqueue(db, "customer", 3)
    with db.write() as conn:
        conn.execute(update(upstreams_t).values(state="open", next_probe_at=T0 + 100))
    assert len(claim(p)) == 3


def test_limits_from_settings_and_environment() -> None:
    s = load_settings(upstream_limits='{"billing": {"rate": 100, "max_in_flight": 8}}')
    got = limits_from(s, {"SYNCBRIDGE_UPSTREAM_CRM_RATE": "20",
                          "SYNCBRIDGE_UPSTREAM_BILLING_MAX_IN_FLIGHT": "4"})
    assert got == {"billing": Limit(100.0, 4), "crm": Limit(20.0, None)}
    assert limits_from(load_settings(), {}) == {}
    with pytest.raises(SettingsError, match="SYNCBRIDGE_UPSTREAM_CRM_RATE: must be more"):
        limits_from(load_settings(), {"SYNCBRIDGE_UPSTREAM_CRM_RATE": "0"})
    with pytest.raises(SettingsError, match="SYNCBRIDGE_UPSTREAM_LIMITS: not JSON"):
        limits_from(load_settings(upstream_limits="{"), {})


def test_a_stale_estimate_is_settled_exactly(db: Database, now: list[float]) -> None:
    """A worker whose view of the bucket is a moment old claims on it, then gives back
    (in the same transaction) what the bucket no longer holds: never a token too many."""
    a = make(db, "wa", limits={"crm": Limit(rate=40, max_in_flight=12)})
    b = make(db, "wb", limits={"crm": Limit(rate=40, max_in_flight=12)})
    enqueue(db, "invoice", 30)
    assert len(claim(b, 1)) == 1  # b now believes 9 tokens are left
    assert len(claim(a)) == 9
    assert claim(b) == []  # it claimed 9 on its stale view; the settle gave all 9 back
    with db.read() as conn:
        pending = conn.execute(select(jobs_t.c.lease_token, jobs_t.c.attempt_count,
                                      jobs_t.c.lease_owner)
                               .where(jobs_t.c.status == "pending")).all()
    assert len(pending) == 20 and {tuple(r) for r in pending} == {(0, 0, None)}
    now[0] += 1.0  # a full bucket again (10), but only 2 more may run (12 in flight)
    assert len(claim(b)) == 2
