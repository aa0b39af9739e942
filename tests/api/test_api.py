"""The HTTP API end to end: a real `syncbridge serve` process, httpx, both databases."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from alembic import command
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from core import clock, completion, enqueue, leases, operator_actions, reads
from core.api.idempotency import fingerprint, idempotency_t
from core.db import Database
from core.migrations import alembic_config
from core.models import attempts_t, jobs_t
from core.records import Completion
from tests.api.conftest import (
    PG_PASSWORD,
    READ_SECRET,
    ROOT,
    TOKENS,
    WRITE_SECRET,
    Server,
    env_for,
)
from tests.helpers import wait_for

PROBLEM = "application/problem+json"


def assert_problem(resp: httpx.Response, status: int, contains: str = "") -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == PROBLEM
    doc: dict[str, Any] = resp.json()
    assert {"type", "title", "status", "detail"} <= doc.keys()
    assert doc["status"] == status
    assert contains in doc["detail"], doc
    assert "Traceback" not in resp.text and PG_PASSWORD not in resp.text
    return doc


def fail_all_due(db: Database, error_type: str = "ValidationError") -> list[int]:
    """Claim every due job and end its attempt as failed (what a worker would write)."""
    claimed = leases.claim(db, "test-worker", 1000, lease_seconds=30,
                          job_types=["customer", "invoice"])
    now = clock.now()
    completion.complete(db, [Completion(c.id, c.lease_token, "test-worker", "failed", now,
                                        now + 0.1, 100.0, error_type=error_type,
                                        error_message="bad record")
                        for c in claimed])
    return [c.id for c in claimed]


def test_enqueue_duplicate_bulk_show_and_cursor_paging(server: Server) -> None:
    c = server.client
    r = c.post("/api/jobs/customer", json={"entity_id": "c_1", "payload": {"k": 1},
                                           "correlation_id": "corr-1"})
    assert r.status_code == 201, r.text
    job = r.json()
    assert r.headers["location"] == f"/api/jobs/{job['id']}"
    assert (job["status"], job["attempt_count"], job["correlation_id"], job["payload"]) == \
        ("pending", 0, "corr-1", {"k": 1})
    assert job["next_run_at"]
    dup = c.post("/api/jobs/customer", json={"entity_id": "c_1"})
    doc = assert_problem(dup, 409, "already exists")
    assert doc["existing_job_id"] == job["id"]
    assert dup.headers["location"] == f"/api/jobs/{job['id']}"

    # run_at: ISO time or epoch seconds.
    later = time.time() + 3600
    r = c.post("/api/jobs/customer", json={"entity_id": "c_sched", "run_at": later})
    assert r.status_code == 201 and r.json()["next_run_at"] == clock.iso(later)
    r = c.post("/api/jobs/invoice", json={"entity_id": "i_sched",
                                          "run_at": "2030-01-02T03:04:05+00:00"})
    assert r.status_code == 201 and r.json()["next_run_at"].startswith("2030-01-02T03:04:05")
    assert_problem(c.post("/api/jobs/customer", json={"entity_id": "c_x", "run_at": "soon"}),
                   422, "run_at")

    # Bulk: created / duplicate (with the existing id) / invalid (with why).
    r = c.post("/api/jobs/customer/bulk", json={
        "entity_ids": ["c_2", "c_1", "c_2", "bad\x07id", "x" * 200],
        "items": [{"entity_id": "c_3", "payload": {"n": 3}}]})
    assert r.status_code == 200, r.text
    out = r.json()
    by = [(x["entity_id"], x["outcome"], x.get("job_id")) for x in out["results"]]
    assert by[0][:2] == ("c_2", "created")
    assert by[1] == ("c_1", "duplicate", job["id"])
    assert by[2] == ("c_2", "duplicate", by[0][2])
    assert by[3][1] == by[4][1] == "invalid"
    assert "control character" in out["results"][3]["error"]
    assert "longer than" in out["results"][4]["error"]
    assert by[5][:2] == ("c_3", "created")
    assert (out["created"], out["duplicates"], out["invalid"]) == (2, 2, 2)
    assert c.get(f"/api/jobs/{by[5][2]}").json()["payload"] == {"n": 3}

    # Show and attempts.
    r = c.get(f"/api/jobs/{job['id']}")
    assert r.status_code == 200 and r.json()["entity_id"] == "c_1"
    assert r.json()["replayed_as"] == []
    r = c.get(f"/api/jobs/{job['id']}/attempts")
    assert r.json() == {"job_id": job["id"], "attempts": []}
    assert_problem(c.get("/api/jobs/999999"), 404, "not found")
    assert_problem(c.get("/api/jobs/999999/attempts"), 404, "not found")

    # Cursor paging: keyset on id, newest first, every job exactly once.
    c.post("/api/jobs/invoice/bulk", json={"entity_ids": [f"i_{n}" for n in range(23)]})
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 5}
        if cursor:
            params["cursor"] = cursor
        page = c.get("/api/jobs", params=params).json()
        seen += [j["id"] for j in page["jobs"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen)) == 28
    assert pages == 6
    only = c.get("/api/jobs", params={"type": "invoice", "limit": 100}).json()["jobs"]
    assert len(only) == 24 and {j["job_type"] for j in only} == {"invoice"}
    found = c.get("/api/jobs", params={"search": "c_sched"}).json()["jobs"]
    assert [j["entity_id"] for j in found] == ["c_sched"]
    assert c.get("/api/jobs", params={"status": "running"}).json()["jobs"] == []
    assert_problem(c.get("/api/jobs", params={"status": "bogus"}), 422, "unknown status")
    assert_problem(c.get("/api/jobs", params={"cursor": "not-a-cursor"}), 400, "cursor")


def test_control_refusals_tokens_and_audit(server_factory: Callable[..., Server],
                                            api_db: Database) -> None:
    srv = server_factory(token=WRITE_SECRET, api_tokens=TOKENS)
    c = srv.client
    ids = [c.post("/api/jobs/customer", json={"entity_id": f"c_{n}"}).json()["id"]
           for n in range(4)]
    assert sorted(fail_all_due(api_db)) == ids
    a, b, d, e = ids

    assert c.post(f"/api/jobs/{a}/retry").json()["message"] == f"job {a} queued again"
    refused = c.post(f"/api/jobs/{a}/retry")
    assert_problem(refused, 409, f"job {a} is pending; only failed or dead jobs can be retried")
    r = c.post(f"/api/jobs/{a}/cancel")
    assert r.status_code == 200 and r.json()["message"] == f"job {a} canceled (was pending)"
    assert_problem(c.post(f"/api/jobs/{a}/cancel"), 409, "only pending or running")
    assert_problem(c.post("/api/jobs/424242/cancel"), 404, "job 424242 not found")

    [attempt] = c.get(f"/api/jobs/{b}/attempts").json()["attempts"]
    r = c.post(f"/api/jobs/{b}/replay", json={"attempt_id": attempt["id"]})
    assert r.status_code == 201, r.text
    new_id = r.json()["new_job_id"]
    assert r.headers["location"] == f"/api/jobs/{new_id}"
    replayed = c.get(f"/api/jobs/{new_id}").json()
    assert replayed["replay_of_job_id"] == b and replayed["replay_of_attempt_id"] == attempt["id"]
    # An active job for the entity now exists: a second replay is refused as a duplicate.
    dup = c.post(f"/api/jobs/{b}/replay", json={"attempt_id": None})
    assert assert_problem(dup, 409, "already exists")["existing_job_id"] == new_id
    assert_problem(c.post(f"/api/jobs/{b}/replay", json={"attempt_number": 7}), 409,
                   f"job {b} has no attempt 7")
    assert_problem(c.post(f"/api/jobs/{d}/replay", json={"attempt_id": 999999}), 409,
                   "no attempt with id")

    r = c.post("/api/bulk/retry", json={"ids": [d, e, a]})
    assert r.status_code == 200
    out = r.json()
    assert [x["job_id"] for x in out["done"]] == [d, e]
    assert out["refused"] == [{"job_id": a, "reason": f"job {a} is canceled; only failed or "
                                                      "dead jobs can be retried"}]
    r = c.post("/api/bulk/cancel", json={"ids": [d, e]}).json()
    assert [x["job_id"] for x in r["done"]] == [d, e]
    assert c.post("/api/bulk/replay", json={"ids": [d]}).json()["refused"][0]["reason"] == \
        f"job {d} is canceled; only failed or dead jobs can be replayed"

    # Tokens: none -> 401, wrong -> 401, read-only on a mutation -> 403; reads with read.
    anon = httpx.Client(base_url=srv.url)
    assert_problem(anon.get("/api/jobs"), 401, "bearer token is required")
    assert anon.get("/api/jobs").headers["www-authenticate"].startswith("Bearer")
    assert_problem(anon.get("/api/jobs", headers={"Authorization": "Bearer nope"}), 401,
                   "not valid")
    reader = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {READ_SECRET}"})
    assert reader.get(f"/api/jobs/{a}").status_code == 200
    assert_problem(reader.post(f"/api/jobs/{a}/retry"), 403, "may only read")
    assert_problem(reader.post("/api/jobs/customer", json={"entity_id": "c_9"}), 403)
    assert anon.get("/healthz").status_code == 200
    assert anon.get("/metrics").status_code == 401
    assert reader.get("/metrics").status_code == 200

    events = c.get("/api/audit", params={"limit": 100}).json()["events"]
    assert {e["actor"] for e in events} == {"ops"}
    assert [e["action"] for e in events if e["job_id"] == a] == ["cancel", "retry"]
    assert [ev["actor"] for ev in operator_actions.audit_log(api_db, job_id=b)] == ["ops"]
    assert c.get("/api/audit", params={"job_id": b}).json()["events"][0]["new_job_id"] == new_id
    anon.close()
    reader.close()


def _count(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(jobs_t)).scalar() or 0)


def test_idempotency_key_repeat_mismatch_concurrency_and_expiry(
        server_factory: Callable[..., Server], api_db: Database) -> None:
    srv = server_factory(api_idempotency_ttl_seconds="1.5")
    c = srv.client
    key = {"Idempotency-Key": f'"{uuid.uuid4()}"'}
    first = c.post("/api/jobs/customer", json={"entity_id": "c_1"}, headers=key)
    assert first.status_code == 201, first.text
    again = c.post("/api/jobs/customer", json={"entity_id": "c_1"}, headers=key)
    assert (again.status_code, again.json()) == (201, first.json())
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert _count(api_db) == 1
    assert_problem(c.post("/api/jobs/customer", json={"entity_id": "c_2"}, headers=key), 422,
                   "different request")
    assert_problem(c.post("/api/jobs/customer", json={"entity_id": "c_2"},
                          headers={"Idempotency-Key": "bad\tkey"}), 400, "Idempotency-Key")

    # Many at once with one key: one runs, the rest get its answer or 409 in progress.
    key2 = {"Idempotency-Key": str(uuid.uuid4())}
    answers: list[httpx.Response] = []

    def fire() -> None:
        with httpx.Client(base_url=srv.url, timeout=10) as cl:
            answers.append(cl.post("/api/jobs/customer/bulk", headers=key2,
                                   json={"entity_ids": [f"c_b{n}" for n in range(300)]}))

    threads = [threading.Thread(target=fire) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = [a for a in answers if a.status_code == 200]
    busy = [a for a in answers if a.status_code == 409]
    assert len(ok) + len(busy) == 8 and ok
    assert all(a.json() == ok[0].json() for a in ok)
    assert ok[0].json()["created"] == 300
    for a in busy:
        assert_problem(a, 409, "in progress")
    assert _count(api_db) == 301

    # A key stuck in progress (its process died) answers 409 until it expires.
    stuck = str(uuid.uuid4())
    body = b'{"entity_id": "c_s"}'
    sent = {"Idempotency-Key": stuck, "content-type": "application/json"}
    now = clock.now()
    with api_db.write() as conn:
        conn.execute(idempotency_t.insert().values(
            scope="api", key=stuck, state="in_progress", created_at=now, expires_at=now + 1.5,
            fingerprint=fingerprint("POST", "/api/jobs/customer", b"", body)))
    assert_problem(c.post("/api/jobs/customer", content=body, headers=sent), 409, "in progress")

    # Expiry: after the TTL the same key runs the request again (here: now a duplicate).
    time.sleep(1.6)  # the TTL itself is what is under test
    expired = c.post("/api/jobs/customer", json={"entity_id": "c_1"}, headers=key)
    assert_problem(expired, 409, "already exists")
    assert c.post("/api/jobs/customer", content=body, headers=sent).status_code == 201


def test_bad_input_is_a_problem_document_never_a_500(
        server_factory: Callable[..., Server]) -> None:
    srv = server_factory(api_max_body_bytes="2048")
    c = srv.client
    assert_problem(c.post("/api/jobs/customer", content=b'{"entity_id": ',
                          headers={"content-type": "application/json"}), 400, "not valid JSON")
    assert_problem(c.post("/api/jobs/customer", content=b"c_1"), 400, "JSON object")
    assert_problem(c.post("/api/jobs/nosuchtype", json={"entity_id": "c_1"}), 404,
                   "unknown job type")
    assert_problem(c.post("/api/jobs/customer", json={"entity_id": "c\x00"}), 422,
                   "control character")
    assert_problem(c.post("/api/jobs/customer", json={"entity_id": "c" * 129}), 422,
                   "longer than 128")
    assert_problem(c.post("/api/jobs/customer", json={"entity_id": " c"}), 422, "white space")
    assert_problem(c.post("/api/jobs/customer", json={"entity_id": 5}), 422, "entity_id")
    assert_problem(c.post("/api/jobs/customer", json={"entity_id": "c_1", "payload": [1]}),
                   422, "payload")
    assert_problem(c.post("/api/jobs/customer", content=b'{"entity_id": "c_1", '
                          b'"payload": {"x": NaN}}', headers={"content-type":
                                                               "application/json"}),
                   422, "strict JSON")
    assert_problem(c.post("/api/jobs/customer", json={"entity_id": "c_1",
                                                      "payload": {"x": "y" * 3000}}),
                   413, "larger than 2048")
    assert_problem(c.delete("/api/jobs/customer"), 405)
    assert_problem(c.get("/api/nothing/here"), 404, "no such route")
    assert_problem(c.get("/api/jobs/abc"), 422)
    assert_problem(c.get("/api/jobs/99999999999999"), 422)
    assert_problem(c.get("/api/jobs", params={"type": "bad\x01"}), 422, "unknown job type")
    assert_problem(c.get("/api/jobs", params={"limit": 0}), 422)
    assert_problem(c.post("/api/bulk/explode", json={"ids": [1]}), 422)
    assert_problem(c.post("/api/bulk/retry", json={"ids": []}), 422)


def test_health_and_readyz_behind_schema(server: Server, api_db: Database) -> None:
    c = server.client
    assert c.get("/healthz").json() == {"status": "ok", "revision": None}
    assert c.get("/readyz").json()["status"] == "ready"
    cfg = alembic_config()
    for attempt in range(3):
        # The server's background metrics snapshot reads the tables the downgrade drops:
        # PostgreSQL may pick the downgrade as a deadlock's victim; it is then run again.
        try:
            with api_db.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.downgrade(cfg, "0005")
            break
        except OperationalError as exc:
            if "deadlock" not in str(exc) or attempt == 2:
                raise
    doc = assert_problem(c.get("/readyz"), 503, "schema is at revision 0005")
    assert "db upgrade" in doc["detail"]
    assert c.get("/healthz").status_code == 200


def test_non_loopback_without_token_is_refused_at_start() -> None:
    r = subprocess.run([sys.executable, "-m", "syncbridge_tui", "serve", "--host", "0.0.0.0",
                        "--db", "sqlite:///unused.db"], env=env_for(), cwd=ROOT,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing to serve on 0.0.0.0" in lines[0]
    bad = subprocess.run([sys.executable, "-m", "syncbridge_tui", "serve", "--db",
                          "sqlite:///unused.db"], env=env_for(api_tokens="x:admin:" + "s" * 20),
                         cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "scope must be read or write" in bad.stderr
    assert "s" * 20 not in bad.stderr


def _scrape(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_prometheus_metrics_match_the_database(server: Server, api_db: Database) -> None:
    c = server.client
    c.post("/api/jobs/customer/bulk", json={"entity_ids": [f"c_{n}" for n in range(7)]})
    c.post("/api/jobs/invoice/bulk", json={"entity_ids": [f"i_{n}" for n in range(3)]})
    fail_all_due(api_db, "NotFound")
    c.post("/api/jobs/customer/bulk", json={"entity_ids": [f"c_p{n}" for n in range(5)]})
    c.post("/api/jobs/1/retry")

    def matches() -> dict[str, Any] | None:
        resp = c.get("/metrics")
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/plain")
        m = _scrape(resp.text)
        with api_db.read() as conn:
            db_jobs = {(t, s): n for t, s, n in conn.execute(
                select(jobs_t.c.job_type, jobs_t.c.status, func.count())
                .group_by(jobs_t.c.job_type, jobs_t.c.status))}
            db_attempts = {(o, e or ""): n for o, e, n in conn.execute(
                select(attempts_t.c.outcome, attempts_t.c.error_type, func.count())
                .group_by(attempts_t.c.outcome, attempts_t.c.error_type))}
        got = {(dict(k)["job_type"], dict(k)["status"]): v
               for k, v in m.get("syncbridge_jobs", {}).items() if v}
        att = {(dict(k)["outcome"], dict(k)["error_type"]): v
               for k, v in m.get("syncbridge_attempts_total", {}).items()}
        if got == db_jobs and att == db_attempts:
            return {"m": m, "text": resp.text}
        return None

    found = wait_for(matches, timeout=10, message="/metrics to match the database")
    assert found is not None
    m, text = found["m"], found["text"]
    assert m["syncbridge_due_jobs"][(("job_type", "customer"),)] == 6
    assert m["syncbridge_dead_letter_jobs"][(("job_type", "customer"),)] == 0
    assert m["syncbridge_attempt_execution_seconds_count"][()] == 10
    assert m["syncbridge_enqueue_to_start_seconds_count"][()] == 10
    assert m["syncbridge_attempt_execution_seconds_bucket"][(("le", "0.1"),)] == 10
    for name in ("syncbridge_jobs", "syncbridge_attempts_total", "syncbridge_due_jobs",
                 "syncbridge_oldest_due_age_seconds", "syncbridge_workers",
                 "syncbridge_attempt_execution_seconds", "syncbridge_enqueue_to_start_seconds"):
        assert f"# HELP {name} " in text and f"# TYPE {name} " in text
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("syncbridge_")
        for s in family.samples:
            assert not {"job_id", "entity_id", "id"} & s.labels.keys()


def test_worker_metrics_port_counts_what_the_attempts_table_holds(
        db_url: str, api_db: Database) -> None:
    for entity in ("c_1001", "c_flaky", "c_missing", "c_invalid", "c_2", "c_3"):
        enqueue.enqueue(api_db, "customer", entity, known_types=["customer"], max_attempts=4)
    enqueue.enqueue(api_db, "invoice", "i_2001", known_types=["invoice"], max_attempts=4)
    from tests.api.conftest import free_port, with_password

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncbridge_tui", "--worker-only", "--metrics-port", str(port),
         "--db", with_password(db_url)],
        env=env_for(demo="1", job_backoff_seconds_base="0.01", job_backoff_seconds_cap="0.02",
                    poll_seconds="0.02"),
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: reads.is_drained(api_db), timeout=30, message="the worker to drain")
        with api_db.read() as conn:
            db_attempts = {(o, e or ""): n for o, e, n in conn.execute(
                select(attempts_t.c.outcome, attempts_t.c.error_type, func.count())
                .group_by(attempts_t.c.outcome, attempts_t.c.error_type))}

        def scraped() -> dict[str, Any] | None:
            m = _scrape(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
            got: dict[tuple[str, str], float] = {}
            for k, v in m.get("syncbridge_worker_attempts_total", {}).items():
                labels = dict(k)
                key = (labels["outcome"], labels["error_type"])
                got[key] = got.get(key, 0) + v
            return m if got == db_attempts else None

        m = wait_for(scraped, timeout=10, message="worker metrics to match attempts")
        assert m is not None
        assert sum(db_attempts.values()) == 9  # c_flaky: two retries, then success
        assert m["syncbridge_worker_execution_seconds_count"][(("job_type", "customer"),)] == 8
        starts = m["syncbridge_worker_enqueue_to_start_seconds_count"]
        wait_for(lambda: sum(_scrape(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
                             ["syncbridge_worker_enqueue_to_start_seconds_count"].values()) == 7,
                 timeout=10, message="enqueue-to-start for each job's first attempt")
        assert starts
    finally:
        proc.terminate()
        proc.wait(20)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""


def test_every_route_answers_json(server: Server) -> None:
    c = server.client
    assert c.get("/openapi.json").json()["info"]["title"] == "SyncBridge API"
    assert "swagger" in c.get("/docs").text.lower()
    m = c.get("/api/metrics").json()
    assert {"generated_at", "total_jobs", "by_status", "per_type"} <= m.keys()
    assert c.get("/api/workers").json() == {"workers": []}
    assert c.get("/api/audit").json() == {"events": []}
    assert json.loads(c.get("/healthz").text)["status"] == "ok"
