"""README's "Your own app on two workers", run for real: `syncbridge mock-upstream` over
loopback HTTP, `examples.crm_sync:app` under two headless workers on PostgreSQL, jobs
enqueued through the command line, the recurring sweep, the timeout, a graceful stop."""

from __future__ import annotations

import json
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from core.db import Database
from core.models import attempts_t, jobs_t, schedule_slots_t
from tests.conftest import TABLES
from tests.helpers import wait_for
from tests.reliability._support import PYTHON, ROOT, Procs, billing_writes, clean_env, start_mock

pytestmark = pytest.mark.slow  # end to end: `make test` runs it, `make test-fast` skips it

APP = "examples.crm_sync:app"
CONTACTS = ["c_1001", "c_1002", "c_2002", "c_3003", "c_4004", "c_5005"]


@pytest.fixture
def pg_url(pg_database: str) -> str:
    db = Database(pg_database)
    with db.write() as conn:
        conn.execute(text(f"TRUNCATE {TABLES}, sync_schedule_slots RESTART IDENTITY CASCADE"))
    db.dispose()
    return pg_database


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([PYTHON, "-m", "syncbridge_tui", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


def test_the_example_app_on_two_workers_over_postgresql(pg_url: str, tmp_path: Path) -> None:
    procs = Procs(tmp_path)
    try:
        upstream = start_mock(procs)
        env = clean_env(database_url=pg_url, app=APP, poll_seconds=0.05,
                        job_backoff_seconds_base=0.05, job_backoff_seconds_cap=0.2)
        env.update(EXAMPLE_CRM_URL=f"{upstream}/crm", EXAMPLE_BILLING_URL=f"{upstream}/billing",
                   LEDGER_TOKEN="example-token", EXAMPLE_SWEEP_EVERY="2s",
                   PYTHONPATH=str(ROOT))
        cli(env, "db", "upgrade")
        checked = cli(env, "check")
        assert "ok: ready" in checked.stdout, checked.stdout

        workers = [procs.start(f"worker{n}", ["--worker-only", "--concurrency", "4"], env,
                               log_file=None) for n in (1, 2)]
        cli(env, "enqueue", "contact", *CONTACTS)
        cli(env, "enqueue", "contact_check", "x_slow")  # the directory hangs: timeout
        db = Database(pg_url)
        try:
            def settled() -> bool:
                procs.check_deadlines()
                with db.read() as conn:
                    open_ = conn.execute(select(func.count()).select_from(jobs_t).where(
                        jobs_t.c.job_type == "contact_check",
                        jobs_t.c.status.in_(("pending", "running")))).scalar()
                    done = conn.execute(select(func.count()).select_from(jobs_t).where(
                        jobs_t.c.entity_id.in_(CONTACTS),
                        jobs_t.c.status.in_(("success", "dead", "failed")))).scalar()
                    slots = conn.execute(select(func.count()).select_from(
                        schedule_slots_t)).scalar()
                return open_ == 0 and done == len(CONTACTS) and (slots or 0) >= 3

            wait_for(settled, timeout=90, interval=0.1,
                     message="the contacts, the timed-out check and three sweep slots")
            for w in workers:
                w.signal(signal.SIGTERM)
            for w in workers:
                assert w.wait(timeout=30) == 0, w.tail()

            with db.read() as conn:
                jobs = {r.entity_id: r for r in conn.execute(
                    select(jobs_t).where(jobs_t.c.job_type.in_(("contact", "contact_check"))))
                    if r.entity_id in CONTACTS or r.entity_id == "x_slow"}
                check_attempts = [r.outcome for r in conn.execute(
                    select(attempts_t.c.outcome).where(
                        attempts_t.c.job_id == jobs["x_slow"].id)
                    .order_by(attempts_t.c.number))]
                slot_jobs = [r.job_id for r in conn.execute(select(schedule_slots_t.c.job_id))]
                sweep_budgets = set(conn.execute(select(jobs_t.c.max_attempts).where(
                    jobs_t.c.entity_id == "c_9000")).scalars())
                running = conn.execute(select(func.count()).select_from(jobs_t).where(
                    jobs_t.c.status == "running")).scalar()
                workers_seen = {r.worker_id for r in conn.execute(
                    select(attempts_t.c.worker_id).distinct())}
        finally:
            db.dispose()

        # c_1002 is the mock's 429-forever entity: the contact job's budget
        # (5 attempts) decides; the rest sync once each.
        assert {e: jobs[e].status for e in CONTACTS} == {
            "c_1001": "success", "c_1002": "dead", "c_2002": "success", "c_3003": "success",
            "c_4004": "success", "c_5005": "success"}
        assert jobs["c_1002"].attempt_count == 5
        # The timeout: each attempt ended `timeout`; the type's budget of 2 made it dead.
        assert check_attempts == ["timeout", "timeout"]
        assert jobs["x_slow"].status == "dead"
        # One job per slot across both workers (a skipped slot has no job).
        made = [j for j in slot_jobs if j is not None]
        assert len(made) == len(set(made))
        assert sweep_budgets == {5}  # a scheduled job gets its type's budget
        assert running == 0
        assert len(workers_seen) == 2, workers_seen
        # Every success wrote Billing exactly once, under its own correlation id.
        writes = billing_writes(upstream)
        successes = [jobs[e] for e in CONTACTS if jobs[e].status == "success"]
        assert all(writes[j.correlation_id] == 1 for j in successes), writes
        assert Counter(writes.values()).get(2, 0) == 0

        listed = json.loads(cli(env, "jobs", "--json", "--type", "contact").stdout)
        assert {j["entity_id"] for j in listed} >= set(CONTACTS)
    finally:
        procs.kill_all()
