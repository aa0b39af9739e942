"""Races that the database, not the code's read-then-write, must settle."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from core import enqueue, heartbeats, leases, reads
from core.config import Settings
from core.db import Database, DatabaseError
from core.demo import registry
from core.integrations.mock import SCENARIOS, MockUpstream
from core.worker import Worker
from tests.helpers import async_wait_for, in_process, wait_for

TYPES = registry.names()
CLI = [sys.executable, "-m", "syncbridge_tui"]


def test_racing_enqueues_from_threads_make_one_job(db: Database) -> None:
    barrier = threading.Barrier(8)
    results: list[enqueue.EnqueueResult] = []
    errors: list[BaseException] = []

    def go() -> None:
        try:
            barrier.wait()
            results.append(enqueue.enqueue(db, "customer", "c_race", known_types=TYPES,
                                         max_attempts=4))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len({r.job_id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert reads.count_jobs(db) == 1


def test_racing_enqueues_from_processes_make_one_job(db_url: str, db: Database) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCBRIDGE_")}
    procs = [subprocess.Popen([*CLI, "enqueue", "invoice", "i_race", "--db", db_url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(4)]
    outs = [p.communicate(timeout=60) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 3, 3, 3], outs
    ids = set()
    for (stdout, _), p in zip(outs, procs, strict=True):
        data = json.loads(stdout)
        ids.add(data["id"] if p.returncode == 0 else data["existing_job_id"])
    assert len(ids) == 1
    assert reads.count_jobs(db) == 1


def test_concurrent_claimers_never_share_a_job(db: Database, settings: Settings) -> None:
    enqueue.enqueue_many(db, "customer", [f"c_{i}" for i in range(300)], known_types=TYPES,
                       max_attempts=4)
    claimed: list[list[int]] = [[] for _ in range(4)]

    def claimer(n: int) -> None:
        while True:
            jobs = leases.claim(db, f"w{n}", 7, lease_seconds=30, job_types=TYPES)
            if not jobs:
                return
            claimed[n].extend(j.id for j in jobs)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    everything = [j for part in claimed for j in part]
    assert len(everything) == 300 and len(set(everything)) == 300


def test_worker_stops_claiming_without_its_heartbeat(db: Database, settings: Settings,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    worker = Worker(db, settings, mock=MockUpstream())
    real = heartbeats.record_heartbeat
    broken = threading.Event()

    def heartbeat(*args: object, **kwargs: object) -> None:
        if broken.is_set():
            raise DatabaseError("database error: simulated outage")
        real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(heartbeats, "record_heartbeat", heartbeat)
    loop_turns = [0]  # the claim loop's sleeps: one per turn
    real_sleep = worker._sleep

    async def counted_sleep(timeout: float | None) -> None:
        loop_turns[0] += 1
        await real_sleep(timeout)

    worker._sleep = counted_sleep  # type: ignore[method-assign]

    async def scenario() -> None:
        task = asyncio.create_task(worker.run())
        await async_wait_for(lambda: worker.state == "running", 10)
        broken.set()
        await async_wait_for(lambda: not worker._heartbeat_ok, 10, message="heartbeat failure")
        # A claim the loop sent before the failure may still be running (in its thread, on
        # a loaded machine): the job goes in once the loop has turned twice since, so the
        # turn that sees it began after the failure.
        seen = loop_turns[0]
        await async_wait_for(lambda: loop_turns[0] >= seen + 2, 10, message="two turns")
        job_id = enqueue.enqueue(db, "customer", "c_1001", known_types=TYPES,
                               max_attempts=4).job_id
        # The claim loop goes round ten times with the job there; it must stay unclaimed.
        turns = loop_turns[0]
        await async_wait_for(lambda: loop_turns[0] >= turns + 10, 10,
                             message="ten turns of the claim loop")
        assert reads.get_job(db, job_id).status == "pending"  # type: ignore[union-attr]
        broken.clear()
        await async_wait_for(
            lambda: reads.get_job(db, job_id).status == "success", 10,  # type: ignore[union-attr]
            message="claim after heartbeat restored")
        worker.request_stop()
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())


@pytest.mark.slow
def test_two_worker_processes_over_real_http(db_url: str, db: Database,
                                              tmp_path: Path) -> None:
    upstream = subprocess.Popen([*CLI, "mock-upstream", "--port", "0"],
                                stdout=subprocess.PIPE, text=True)
    try:
        base = wait_for(lambda: upstream.stdout.readline(), 20).split()[-1]  # type: ignore[union-attr]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCBRIDGE_")}
        env.update(SYNCBRIDGE_DATABASE_URL=db_url, SYNCBRIDGE_CRM_URL=f"{base}/crm",
                   SYNCBRIDGE_BILLING_URL=f"{base}/billing", SYNCBRIDGE_POLL_SECONDS="0.05",
                   SYNCBRIDGE_JOB_BACKOFF_SECONDS_BASE="0.05")
        subprocess.run([*CLI, "demo"], env=env, check=True, capture_output=True, timeout=60)
        extra = [f"c_{n}" for n in range(100)]
        enqueue.enqueue_many(db, "customer", extra, known_types=TYPES, max_attempts=4)
        workers = [subprocess.Popen([*CLI, "--worker-only", "--until-empty",
                                     "--concurrency", "4"], env=env,
                                    stdout=subprocess.DEVNULL,
                                    stderr=open(tmp_path / f"w{i}.log", "w"))  # noqa: SIM115
                   for i in range(2)]
        try:
            codes = [w.wait(timeout=120) for w in workers]
        finally:
            for w in workers:
                if w.poll() is None:
                    w.send_signal(signal.SIGKILL)
        assert codes == [0, 0]
        jobs = {j.entity_id: j for j in reads.list_jobs(db, limit=1000)}
        for _job_type, entity, expected, _ in SCENARIOS:
            assert jobs[entity].status == expected, entity
        assert all(jobs[e].status == "success" for e in extra)
        # Both workers took part, and every success wrote Billing exactly once.
        owners = {a.worker_id for j in jobs.values() for a in reads.attempts_for(db, j.id)}
        assert len(owners) == 2
        successes = [j for j in jobs.values() if j.status == "success"]
        writes = httpx.get(f"{base}/_stats", timeout=5).json()["billing_writes"]
        assert sum(writes.values()) == len(successes)
        assert all(writes[j.correlation_id] == 1 for j in successes)
        logs = (tmp_path / "w0.log").read_text().splitlines()
        assert any(json.loads(line).get("event") == "attempt.finished" for line in logs)
    finally:
        upstream.send_signal(signal.SIGTERM)
        upstream.wait(timeout=20)


def test_log_file_setting_gets_the_json_lines(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCBRIDGE_")}
    env.update(SYNCBRIDGE_DATABASE_URL=f"sqlite:///{tmp_path}/l.db",
               SYNCBRIDGE_LOG_FILE=str(log), SYNCBRIDGE_DEMO="1")
    enqueued = in_process("enqueue", "customer", "c_1001",
                          env={k: v for k, v in env.items() if k.startswith("SYNCBRIDGE_")})
    assert enqueued.returncode == 0, enqueued.stderr
    proc = subprocess.run([*CLI, "--worker-only", "--until-empty"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == ""
    events = [json.loads(line) for line in log.read_text().splitlines()]
    done = [e for e in events if e["event"] == "attempt.finished"]
    assert len(done) == 1 and done[0]["outcome"] == "success"
    assert {"job_id", "attempt", "correlation_id", "worker_id", "duration_ms"} <= set(done[0])


def test_mock_upstream_command_serves_http(tmp_path: Path) -> None:
    proc = subprocess.Popen([*CLI, "mock-upstream", "--port", "0"], stdout=subprocess.PIPE,
                            text=True)
    try:
        line = wait_for(lambda: proc.stdout.readline(), 20)  # type: ignore[union-attr]
        base = line.split()[-1]
        import httpx

        r = httpx.get(f"{base}/crm/customers/c_1001", timeout=5)
        assert r.status_code == 200 and r.json()["id"] == "c_1001"
        assert httpx.get(f"{base}/crm/customers/c_missing", timeout=5).status_code == 404
        r = httpx.put(f"{base}/billing/customers/c_1002", json={}, timeout=5)
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_core_never_imports_the_ui() -> None:
    # At run time: importing the whole engine loads no Textual and no console code. (Rich may
    # be loaded by structlog's optional dev renderer; core itself never imports it, below.)
    # Every module of core (Alembic's env and revision scripts only run inside a migration).
    code = ("import sys, importlib, pkgutil, core;"
            "[importlib.import_module(m.name) for m in pkgutil.walk_packages(core.__path__, "
            "'core.') if not m.name.startswith(('core.migrations.env', "
            "'core.migrations.versions'))];"
            "bad=[m for m in sys.modules if m.split('.')[0] in ('textual','syncbridge_tui')];"
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # In the source: no module of core imports textual, rich or the console.
    import ast

    offenders = []
    for path in Path("core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path}: {n}" for n in names
                          if n.split(".")[0] in ("textual", "rich", "syncbridge_tui")]
    assert offenders == []


def test_idle_worker_wakes_on_enqueue_not_on_poll(db: Database, settings: Settings,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """With a 30 s poll, only a wake-up (NOTIFY on PostgreSQL, the in-process signal on
    SQLite) can start the job within the deadline."""
    slow_poll = settings.model_copy(update={"poll_seconds": 30.0})
    worker = Worker(db, slow_poll, mock=MockUpstream())
    empty_claims = []
    real_claim = leases.claim

    def claim(*args: object, **kwargs: object) -> list[object]:
        jobs = real_claim(*args, **kwargs)  # type: ignore[arg-type]
        if not jobs:
            empty_claims.append(1)
        return jobs  # type: ignore[return-value]

    monkeypatch.setattr(leases, "claim", claim)

    async def scenario() -> None:
        task = asyncio.create_task(worker.run())
        # Idle: its first claim found nothing, so only a wake-up brings it back in time.
        await async_wait_for(lambda: empty_claims, 10, message="an empty claim")
        job_id = await asyncio.to_thread(
            lambda: enqueue.enqueue(db, "customer", "c_1001", known_types=TYPES,
                                  max_attempts=4).job_id)
        await async_wait_for(
            lambda: reads.get_job(db, job_id).status == "success", 10,  # type: ignore[union-attr]
            message="job finished after a wake-up")
        worker.request_stop()
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())


def test_pg_notify_reaches_a_worker_in_another_process(db_url: str, db: Database) -> None:
    if not db.is_postgres:
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite polls across processes")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCBRIDGE_")}
    env.update(SYNCBRIDGE_DATABASE_URL=db_url, SYNCBRIDGE_POLL_SECONDS="30", SYNCBRIDGE_DEMO="1")
    proc = subprocess.Popen([*CLI, "--worker-only"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: heartbeats.list_workers(db), 20, message="worker heartbeat")
        # The worker's first claim found nothing; only a NOTIFY can wake it within 10 s.
        wait_for(lambda: "worker.started" in (proc.stderr.readline() or ""), 20)  # type: ignore[union-attr]
        job_id = enqueue.enqueue(db, "customer", "c_1001", known_types=TYPES,
                               max_attempts=4).job_id
        wait_for(lambda: reads.get_job(db, job_id).status == "success", 10,  # type: ignore[union-attr]
                 message="job run after NOTIFY")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_worker_ids_are_unique_per_start(db: Database, settings: Settings) -> None:
    ids = {Worker(db, settings).id for _ in range(20)}
    assert len(ids) == 20
    assert all(str(os.getpid()) in i for i in ids)
