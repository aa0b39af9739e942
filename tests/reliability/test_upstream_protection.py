"""Issue 11, point 5: upstream protection proven with real worker processes
(tests/reliability/_protect_worker.py: core's Worker with job types `alpha` and `beta`, each
calling its own named upstream) against `syncbridge mock-upstream` over loopback HTTP, whose
control endpoints enforce a real rate limit (429 + Retry-After above R requests a second),
an outage (connections closed without an answer, then 503s) and count every answer per
second. SQLite and PostgreSQL; each scenario runs protected and, side by side, with
SYNCBRIDGE_UPSTREAM_PROTECTION=false. Sizes are scaled down from the issue to keep the file
to a few minutes on 2 cores (R = 100/s, 600-800 jobs, a 6 s outage); the figures are
computed from the mock's counters, the attempt rows and the workers' logs.
"""

from __future__ import annotations

import json
import statistics
import time
import urllib.request
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select

import core.enqueue
from core import upstream_protection as up
from core.db import Database
from core.models import upstreams_t
from tests.helpers import wait_for
from tests.reliability import _support as s
from tests.reliability.conftest import backend

pytestmark = pytest.mark.slow

R = 100  # requests a second the rate-limited upstream answers
BREAKER_N = 5
COOLDOWN, COOLDOWN_MAX = 1.0, 4.0
TYPES = {"alpha": ("alpha",), "beta": ("beta",)}


# --- helpers ----------------------------------------------------------------------------------

def control(mock: str, **spec: Any) -> None:
    req = urllib.request.Request(f"{mock}/_control", data=json.dumps(spec).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200


def counters(mock: str, name: str) -> dict[int, Counter[str]]:
    with urllib.request.urlopen(f"{mock}/_counters", timeout=10) as resp:
        data = json.loads(resp.read()).get(name, {})
    return {int(sec): Counter(c) for sec, c in data.items()}


def fleet(procs: s.Procs, db_url: str, mock: str, n: int, *, protect: bool,
          concurrency: int, tag: str, until_empty: bool = False, **extra: Any
          ) -> list[s.Proc]:
    out = []
    for i in range(n):
        name = f"{tag}-w{i}"
        log_file = procs.tmp / f"{name}.log"
        settings: dict[str, Any] = dict(
            database_url=db_url, test_upstream=mock, log_file=log_file, log_level="info",
            lease_seconds=2, poll_seconds=0.05, job_backoff_seconds_base=0.05,
            job_backoff_seconds_cap=0.2, shutdown_timeout_seconds=5, http_timeout_seconds=10,
            upstream_protection=str(protect).lower(), breaker_failures=BREAKER_N,
            breaker_cooldown_seconds=COOLDOWN, breaker_cooldown_max_seconds=COOLDOWN_MAX)
        env = s.clean_env(**{**settings, **extra})
        args = ["--concurrency", str(concurrency)] + (["--until-empty"] if until_empty else [])
        out.append(procs.start(name, args, env, log_file=log_file, max_seconds=180,
                               module="tests.reliability._protect_worker"))
    return out


def enqueue(db: Database, job_type: str, n: int, prefix: str, max_attempts: int) -> None:
    core.enqueue.enqueue_many(db, job_type, [f"{prefix}{i}" for i in range(n)],
                              known_types=list(TYPES), max_attempts=max_attempts)


def outcomes(db: Database, job_type: str) -> tuple[Counter[str], Counter[str]]:
    """(job statuses, attempt outcomes) of one job type."""
    jobs = {j.id: j for j in s.all_jobs(db).values() if j.job_type == job_type}
    attempts = Counter(a.outcome for jid, rows in s.all_attempts(db).items() if jid in jobs
                       for a in rows)
    return Counter(j.status for j in jobs.values()), attempts


def wait_drained(procs: s.Procs, db: Database, timeout: float) -> None:
    def done() -> bool:
        procs.check_deadlines()
        return s.drained(db)

    wait_for(done, timeout=timeout, interval=0.1, message="the queue to drain")


def stop(procs: s.Procs, workers: list[s.Proc]) -> None:
    for w in workers:
        w.signal(15)
    for w in workers:
        w.wait(30)
    assert not procs.tracebacks(), procs.tails()


def events(workers: list[s.Proc], name: str) -> list[dict[str, Any]]:
    return [e for w in workers for e in w.log_events() if e.get("event") == name]


def steady(per_sec: dict[int, Counter[str]]) -> list[int]:
    """The seconds with traffic, minus the first and the last (ramp-up, tail)."""
    secs = sorted(sec for sec, c in per_sec.items() if sum(c.values()))
    return secs[1:-1]


def reset_db(db: Database) -> None:
    from sqlalchemy import text

    with db.write() as conn:
        for table in ("sync_job_attempts", "sync_audit_events", "sync_jobs", "sync_upstreams",
                      "sync_workers"):
            conn.execute(text(f"DELETE FROM {table}"))


@pytest.fixture
def mock(procs: s.Procs) -> str:
    return s.start_mock(procs, "mock-protect")


def workers_for(db_url: str) -> int:
    return 2 if db_url.startswith("sqlite") else 4


# --- rate limit -------------------------------------------------------------------------------

def rate_run(procs: s.Procs, db: Database, db_url: str, mock: str, *, mode: str,
             n_jobs: int) -> dict[str, Any]:
    reset_db(db)
    control(mock, upstream="alpha", rate=R, reset_counters=True)
    enqueue(db, "alpha", n_jobs, f"r-{mode}-", max_attempts=4)
    extra = {"upstream_alpha_rate": R} if mode == "configured" else {}
    n = workers_for(db_url)
    t0 = time.monotonic()
    ws = fleet(procs, db_url, mock, n, protect=mode != "off", concurrency=8, tag=mode,
               until_empty=True, **extra)
    wait_drained(procs, db, 90)
    wall = time.monotonic() - t0
    for w in ws:
        assert w.wait(30) == 0, w.tail()
    per_sec = counters(mock, "alpha")
    secs = steady(per_sec)
    total = sum(sum(c.values()) for c in per_sec.values())
    too_many = sum(c["429"] for c in per_sec.values())
    statuses, attempts = outcomes(db, "alpha")
    return dict(
        mode=mode, workers=n, jobs=n_jobs, allowed_per_s=R,
        requests=total, requests_429=too_many,
        share_429=round(too_many / total, 4) if total else 0.0,
        steady_seconds=len(secs),
        steady_requests_per_s=round(statistics.mean(sum(per_sec[x].values()) for x in secs), 1)
        if secs else None,
        steady_max_requests_per_s=max((sum(per_sec[x].values()) for x in secs), default=None),
        steady_ok_per_s=round(statistics.mean(per_sec[x]["200"] for x in secs), 1)
        if secs else None,
        success=statuses["success"], dead=statuses["dead"], stuck=len(s.stuck_jobs(db)),
        attempts=sum(attempts.values()),
        wasted_attempts=sum(n for o, n in attempts.items() if o != "success"),
        drain_seconds=round(wall, 1),
        rate_cuts=len(events(ws, "upstream.rate_cut")),
        pauses=len(events(ws, "upstream.paused")),
    )


def test_rate_limit_is_shared_by_the_fleet(db_url, db, mock, procs, record):
    n_jobs = 800 if backend(db_url) == "postgresql" else 600
    runs = {mode: rate_run(procs, db, db_url, mock, mode=mode, n_jobs=n_jobs)
            for mode in ("configured", "adaptive", "off")}
    record(backend=backend(db_url), **{f"{m}_{k}": v for m, r in runs.items()
                                       for k, v in r.items() if k != "mode"})
    conf = runs["configured"]
    assert conf["dead"] == 0 and conf["success"] == n_jobs and conf["stuck"] == 0
    assert conf["steady_seconds"] >= 3, conf
    assert conf["steady_requests_per_s"] <= 1.1 * R, conf
    assert conf["steady_ok_per_s"] >= 0.8 * R, conf
    assert conf["share_429"] < 0.05, conf
    adaptive = runs["adaptive"]
    assert adaptive["dead"] == 0 and adaptive["stuck"] == 0, adaptive
    assert adaptive["rate_cuts"] >= 1, adaptive  # it adapted: 429s cut the rate
    assert runs["off"]["requests_429"] > conf["requests_429"], runs["off"]


# --- outage -----------------------------------------------------------------------------------

OUTAGE_REFUSE, OUTAGE_503 = 3.0, 3.0
OUTAGE_ATTEMPTS = 3  # a budget an unprotected fleet spends in a 6 s outage


def outage_run(procs: s.Procs, db: Database, db_url: str, mock: str, *, protect: bool
               ) -> dict[str, Any]:
    reset_db(db)
    control(mock, upstream="alpha", rate=None, outage=None, latency=0.05, reset_counters=True)
    n = workers_for(db_url)
    n_jobs = 400 * n
    enqueue(db, "alpha", n_jobs, f"o-{protect}-", max_attempts=OUTAGE_ATTEMPTS)
    ws = fleet(procs, db_url, mock, n, protect=protect, concurrency=2,
               tag=f"outage-{protect}", until_empty=True)

    def done_jobs() -> int:
        return int(s.status_counts(db)["success"])

    wait_for(lambda: done_jobs() >= n_jobs // 4, timeout=60, interval=0.05,
             message="a quarter of the jobs done")
    start = time.time()
    control(mock, upstream="alpha", outage="refuse")
    time.sleep(OUTAGE_REFUSE)  # the fault lasts this long: it is the scenario, not a wait
    control(mock, upstream="alpha", outage="503")
    time.sleep(OUTAGE_503)
    control(mock, upstream="alpha", outage=None)
    healed = time.time()
    wait_drained(procs, db, 90)
    for w in ws:
        assert w.wait(30) == 0, w.tail()
    per_sec = counters(mock, "alpha")
    before = [per_sec[x]["200"] for x in sorted(per_sec) if x < int(start)][1:]
    normal = statistics.mean(before) if before else 0.0
    after = sorted(x for x in per_sec if x > int(healed))
    full = next((x for x in after if per_sec[x]["200"] >= 0.8 * normal), None)
    broken = sum(c["refused"] + c["503"] for c in per_sec.values())
    statuses, attempts = outcomes(db, "alpha")
    opened = events(ws, "upstream.opened")
    return dict(
        protected=protect, workers=n, jobs=n_jobs, fleet_concurrency=2 * n,
        outage_seconds=round(healed - start, 1), requests_to_broken_upstream=broken,
        breaker_opened=len(opened),
        failures_when_opened=opened[0]["failures"] if opened else None,
        probes=len(events(ws, "upstream.half_open")),
        normal_ok_per_s=round(normal, 1),
        back_to_full_speed_s=None if full is None else round(full + 1 - healed, 1),
        success=statuses["success"], dead=statuses["dead"], stuck=len(s.stuck_jobs(db)),
        wasted_attempts=sum(n for o, n in attempts.items() if o != "success"),
    )


def test_outage_opens_the_breaker_and_loses_no_budget(db_url, db, mock, procs, record):
    runs = {p: outage_run(procs, db, db_url, mock, protect=p) for p in (True, False)}
    on, off = runs[True], runs[False]
    record(backend=backend(db_url), **{f"{'protected' if p else 'off'}_{k}": v
                                       for p, r in runs.items() for k, v in r.items()
                                       if k != "protected"})
    assert on["dead"] == 0 and on["success"] == on["jobs"] and on["stuck"] == 0, on
    assert on["breaker_opened"] >= 1 and on["failures_when_opened"] == BREAKER_N, on
    # Requests that reached the broken upstream: the N that open the breaker, the probes,
    # what the fleet had in flight when the failures began, and the claims of workers
    # that reported their failures before the N-th was counted (a worker that saw a
    # failure claims nothing for that upstream until it has reported it): at most another
    # fleet's worth of slots.
    assert on["requests_to_broken_upstream"] <= BREAKER_N + on["probes"] \
        + 2 * on["fleet_concurrency"], on
    assert on["back_to_full_speed_s"] is not None
    assert on["back_to_full_speed_s"] <= COOLDOWN_MAX + 2, on
    assert off["requests_to_broken_upstream"] > on["requests_to_broken_upstream"], off


# --- isolation --------------------------------------------------------------------------------

def beta_rate(per_sec: dict[int, Counter[str]]) -> float:
    secs = steady(per_sec)
    return statistics.mean(per_sec[x]["200"] for x in secs) if secs else 0.0


def test_one_upstream_down_does_not_slow_the_other(db_url, db, mock, procs, record):
    n = workers_for(db_url)
    figures: dict[str, Any] = {"backend": backend(db_url), "workers": n}
    for protect in (True, False):
        tag = "protected" if protect else "off"
        reset_db(db)
        control(mock, upstream="beta", latency=0.05, reset_counters=True)
        control(mock, upstream="alpha", latency=0.05, outage=None, reset_counters=True)
        n_beta = 250 * n
        enqueue(db, "beta", n_beta, f"b0-{tag}-", max_attempts=5)
        ws = fleet(procs, db_url, mock, n, protect=protect, concurrency=4, tag=f"iso-{tag}",
                   until_empty=True)
        wait_drained(procs, db, 90)
        for w in ws:
            assert w.wait(30) == 0, w.tail()
        normal = beta_rate(counters(mock, "beta"))
        reset_db(db)
        control(mock, upstream="beta", reset_counters=True)
        control(mock, upstream="alpha", outage="refuse")
        enqueue(db, "alpha", 100 * n, f"a-{tag}-", max_attempts=5)
        enqueue(db, "beta", n_beta, f"b1-{tag}-", max_attempts=5)
        ws = fleet(procs, db_url, mock, n, protect=protect, concurrency=4,
                   tag=f"iso2-{tag}")

        def beta_done(n_beta: int = n_beta) -> bool:
            procs.check_deadlines()
            return outcomes(db, "beta")[0]["success"] == n_beta

        wait_for(beta_done, timeout=90, interval=0.1, message="beta drained")
        degraded = beta_rate(counters(mock, "beta"))
        control(mock, upstream="alpha", outage=None)
        if protect:
            wait_drained(procs, db, 60)
        stop(procs, ws)
        alpha, _ = outcomes(db, "alpha")
        figures.update({f"{tag}_beta_normal_ok_per_s": round(normal, 1),
                        f"{tag}_beta_ok_per_s_alpha_down": round(degraded, 1),
                        f"{tag}_beta_ratio": round(degraded / normal, 3) if normal else None,
                        f"{tag}_alpha_dead": alpha["dead"],
                        f"{tag}_alpha_success": alpha["success"]})
    record(**figures)
    assert figures["protected_beta_ratio"] >= 0.9, figures
    assert figures["protected_alpha_dead"] == 0, figures


# --- a worker killed mid-probe ----------------------------------------------------------------

def upstream_row(db: Database, name: str) -> Any:
    with db.read() as conn:
        return conn.execute(select(upstreams_t).where(upstreams_t.c.name == name)).one_or_none()


def test_probe_lost_with_its_worker_is_taken_over(db_url, db, mock, procs, record):
    reset_db(db)
    control(mock, upstream="alpha", latency=60.0, outage=None, reset_counters=True)
    enqueue(db, "alpha", 6, "p-", max_attempts=5)
    up.ensure_rows(db, ["alpha"])
    up.open_breaker(db, "alpha", actor="test", known=["alpha"], cooldown=COOLDOWN)
    ws = fleet(procs, db_url, mock, 2, protect=True, concurrency=4, tag="probe",
               http_timeout_seconds=120)

    def probing() -> Any:
        procs.check_deadlines()
        row = upstream_row(db, "alpha")
        return row if row is not None and row.state == "half_open" and row.probe_owner \
            else None

    first = wait_for(probing, timeout=30, interval=0.05, message="a probe to start")
    owner = next(w for w in ws if s.worker_id_of(db, w.pid) == first.probe_owner)
    survivor = next(w for w in ws if w is not owner)
    owner.signal(9)  # SIGKILL mid-probe: the probe's request hangs in the mock
    killed_at = time.monotonic()
    control(mock, upstream="alpha", latency=0.0)

    def closed() -> bool:
        procs.check_deadlines()
        row = upstream_row(db, "alpha")
        return row is not None and row.state == "closed"

    wait_for(closed, timeout=30, interval=0.05, message="the breaker to close")
    took = time.monotonic() - killed_at
    wait_drained(procs, db, 30)
    stop(procs, [survivor])
    attempts = s.all_attempts(db)[first.probe_job_id]
    taken_over = [e for e in survivor.log_events() if e.get("event") == "upstream.half_open"]
    statuses, _ = outcomes(db, "alpha")
    record(backend=backend(db_url), workers=2, killed=1, probe_lease_seconds=2.0,
           closed_after_s=round(took, 1), probes_by_survivor=len(taken_over),
           lost_probe_attempts=[a.outcome for a in attempts], success=statuses["success"],
           dead=statuses["dead"])
    assert taken_over, "the surviving worker ran a probe after the lease expired"
    assert attempts[0].outcome == "lease_expired"
    assert statuses["success"] == 6 and statuses["dead"] == 0
