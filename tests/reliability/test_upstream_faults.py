"""Issue 4, point 6: every upstream fault is classified as DESIGN.md says, and the attempt
records it (outcome, error type, HTTP status), through a real worker process talking real
HTTP to the mock upstream.

DESIGN.md: no status / 5xx / timeout / connection error -> UpstreamTimeout (retryable);
429 -> UpstreamRateLimited (retryable; Retry-After sets the delay when larger); 404 ->
NotFound; anything else (400, invalid JSON, a body too large, a record failing its model)
-> ValidationError (not retryable). Jobs get two attempts: a retryable fault shows
[retry, dead], a non-retryable one [failed].
"""

from __future__ import annotations

import pytest

from tests.reliability import _support as s
from tests.reliability.conftest import backend

pytestmark = pytest.mark.slow

RETRY_DEAD = ["retry", "dead"]
FAILED = ["failed"]
# entity -> (job type, error type, attempt outcomes, HTTP status recorded)
EXPECTED = {
    "x_500": ("customer", "UpstreamTimeout", RETRY_DEAD, 500),
    "x_502": ("customer", "UpstreamTimeout", RETRY_DEAD, 502),
    "x_503": ("invoice", "UpstreamTimeout", RETRY_DEAD, 503),
    "x_504": ("invoice", "UpstreamTimeout", RETRY_DEAD, 504),
    "x_slow": ("customer", "UpstreamTimeout", RETRY_DEAD, None),  # client timeout 0.5 s
    "x_429": ("customer", "UpstreamRateLimited", RETRY_DEAD, 429),  # Retry-After: 2
    "x_429_none": ("customer", "UpstreamRateLimited", RETRY_DEAD, 429),
    "x_429_bad": ("invoice", "UpstreamRateLimited", RETRY_DEAD, 429),  # "soon-ish"
    "c_1002": ("customer", "UpstreamRateLimited", RETRY_DEAD, 429),  # Billing, Retry-After 1
    "c_missing": ("customer", "NotFound", FAILED, 404),
    "x_400": ("customer", "ValidationError", FAILED, 400),
    "x_badjson": ("customer", "ValidationError", FAILED, 200),
    "x_huge": ("invoice", "ValidationError", FAILED, 200),
    "x_markup": ("customer", "ValidationError", FAILED, 400),
    "c_invalid": ("customer", "ValidationError", FAILED, None),  # fails the pydantic model
}
# Minimum gap between the two attempts: Retry-After when the upstream sent a usable one.
MIN_GAP = {"x_429": 1.9, "c_1002": 0.9}
MAX_GAP_WITHOUT_RETRY_AFTER = 1.0  # backoff base 0.05 s + poll; a bad header is ignored


def test_upstream_faults_are_classified(db_url, db, upstream, procs, record):
    jobs = {}
    for entity, (job_type, *_rest) in EXPECTED.items():
        (jobs[entity],) = s.enqueue(db, job_type, [entity], max_attempts=2)
    # Classification alone: with upstream protection on, the 5xx ids would open CRM's
    # breaker and the 429s pause it, and the retry gaps measured here would be theirs
    # (test_upstream_protection.py covers that).
    spec = s.WorkerSpec(http_timeout_seconds=0.5, concurrency=16, lease_seconds=5,
                        extra={"upstream_protection": "false"})
    w = s.start_worker(procs, "faults", db_url, upstream, spec=spec, until_empty=True,
                       max_seconds=60)
    assert w.wait(60) == 0, w.tail()

    # Connection refused: a worker whose CRM is a closed loopback port.
    (refused,) = s.enqueue(db, "customer", ["c_50001"], max_attempts=2)
    r = s.start_worker(procs, "refused", db_url, upstream, spec=spec, until_empty=True,
                       crm_url=f"http://127.0.0.1:{s.closed_port()}/crm", max_seconds=60)
    assert r.wait(60) == 0, r.tail()
    assert not procs.tracebacks(), procs.tails()

    seen, wrong = {}, {}
    expected = {**EXPECTED, "refused": ("customer", "UpstreamTimeout", RETRY_DEAD, None)}
    jobs["refused"] = refused
    all_attempts = s.all_attempts(db)
    rows = s.all_jobs(db)
    for entity, (_type, error_type, outcomes, status) in expected.items():
        attempts = all_attempts[jobs[entity]]
        got = ([a.outcome for a in attempts], {a.error_type for a in attempts},
               {a.http_status for a in attempts})
        seen[entity] = [got[0], sorted(got[1]), sorted(got[2], key=str)]
        if got != (outcomes, {error_type}, {status}):
            wrong[entity] = got
        job = rows[jobs[entity]]
        final = "dead" if outcomes == RETRY_DEAD else "failed"
        if job.status != final or job.last_error_type != error_type:
            wrong[entity] = (job.status, job.last_error_type)
        if final == "dead" and job.dead_error_type != error_type:
            wrong[entity] = ("dead_error_type", job.dead_error_type)
        if any(not a.error_message for a in attempts):
            wrong[entity] = ("no error message", got)
        if len(attempts) == 2:
            gap = attempts[1].started_at - attempts[0].finished_at
            low = MIN_GAP.get(entity, 0.0)
            high = 10.0 if entity in MIN_GAP else MAX_GAP_WITHOUT_RETRY_AFTER
            if not low <= gap <= high:
                wrong[entity] = ("retry gap", round(gap, 2), low, high)
            seen[entity].append(round(gap, 2))

    markup = all_attempts[jobs["x_markup"]][0].error_message
    # Lost: a job not in its designed final state. Duplicated: a job with more than one
    # success attempt, or with more than one Billing write at the mock (by correlation id).
    writes = s.billing_writes(upstream)
    ours = {entity: rows[job_id] for entity, job_id in jobs.items()}
    lost = sum(job.status != ("dead" if expected[entity][2] == RETRY_DEAD else "failed")
               for entity, job in ours.items())
    duplicated = sum(
        max(0, sum(a.outcome == "success" for a in all_attempts[job.id]) - 1)
        + max(0, writes.get(job.correlation_id, 0) - 1) for job in ours.values())
    record(backend=backend(db_url), faults=len(expected), jobs=len(ours),
           workers=len(procs.procs), classified_as_designed=len(expected) - len(wrong),
           table=seen, billing_writes=sum(writes.get(j.correlation_id, 0)
                                          for j in ours.values()),
           lost=lost, duplicated=duplicated, stuck=len(s.stuck_jobs(db)))
    assert wrong == {}
    assert lost == 0 and duplicated == 0
    assert "[bold red]BOOM[/]" in markup, "upstream text is stored literally"
    assert s.stuck_jobs(db) == []
