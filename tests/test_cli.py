"""The `syncbridge` command line: outputs, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from core import reads
from core.db import Database
from core.migrations import current_revision, head_revision
from core.models import jobs_t
from tests.helpers import in_process

CLI = [sys.executable, "-m", "syncbridge_tui"]


def run(*args: str, db: str | None = None, env: dict[str, str] | None = None,
        stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The real thing: a `syncbridge` process."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCBRIDGE_")}
    full_env.update(env or {})
    cmd = [*CLI, *args] + (["--db", db] if db else [])
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, input=stdin,
                          timeout=timeout)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
        ) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`syncbridge` in this process (same code path as the script, a second faster)."""
    from syncbridge_tui.cli import main

    for key in list(os.environ):
        if key.startswith("SYNCBRIDGE_"):
            monkeypatch.delenv(key)

    def go(*args: str, db: str | None = None) -> subprocess.CompletedProcess[str]:
        capsys.readouterr()
        code = main([*args] + (["--db", db] if db else []))
        out = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out.out, out.err)

    return go


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, fragment: str
                          ) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("syncbridge: error:")
    assert fragment in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.fixture
def url(db_url: str) -> str:
    return db_url


def test_enqueue_prints_json_and_duplicate_exits_3(url: str) -> None:
    first = run("enqueue", "customer", "c_1001", db=url)
    assert first.returncode == 0, first.stderr
    job = json.loads(first.stdout)
    assert job["status"] == "pending" and job["entity_id"] == "c_1001"
    again = run("enqueue", "customer", "c_1001", db=url)
    assert again.returncode == 3
    assert json.loads(again.stdout)["existing_job_id"] == job["id"]
    assert f"job {job['id']}" in again.stderr


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["enqueue", "bogus", "c_1"], 2, "unknown job type"),
        (["enqueue", "customer", ""], 2, "must not be empty"),
        (["enqueue", "customer", "x" * 200], 2, "longer than 128"),
        (["enqueue", "customer", "bad\x1bid"], 2, "control character"),
        (["enqueue", "customer"], 2, "at least one ENTITY_ID"),
        (["enqueue", "customer", "c_1", "--payload", "{nope"], 2, "not valid JSON"),
        (["show", "999999"], 1, "job 999999 not found"),
        (["show", "abc"], 2, "positive whole number"),
        (["retry", "424242"], 1, "not found"),
        (["replay", "424242"], 1, "not found"),
        (["cancel", "424242"], 1, "not found"),
        (["jobs", "--status", "weird"], 2, "invalid choice"),
        (["frobnicate"], 2, "invalid choice"),
    ],
)
def test_bad_input_is_one_clear_line(url: str, args: list[str], code: int, fragment: str,
                                     cli: Callable[..., subprocess.CompletedProcess[str]]
                                     ) -> None:
    proc = cli(*args, db=url)
    assert_one_line_error(proc, code, fragment)
    listing = cli("jobs", "--json", db=url)
    assert json.loads(listing.stdout) == []  # nothing half-written


def test_illegal_transitions_exit_1_with_reason(
        url: str, cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    job = json.loads(cli("enqueue", "customer", "c_1001", db=url).stdout)
    assert_one_line_error(cli("retry", str(job["id"]), db=url), 1, "only failed or dead")
    assert_one_line_error(cli("replay", str(job["id"]), db=url), 1, "only failed or dead")
    ok = cli("cancel", str(job["id"]), db=url)
    assert ok.returncode == 0 and "canceled (was pending)" in ok.stdout
    assert_one_line_error(cli("cancel", str(job["id"]), db=url), 1, "is canceled")


def test_bad_database_urls(tmp_path: Path) -> None:
    assert_one_line_error(in_process("jobs", "--db", "mysql://x/y"), 2,
                          "SYNCBRIDGE_DATABASE_URL")
    assert_one_line_error(
        in_process("jobs", "--db", "postgresql+psycopg://postgres@127.0.0.1:1/nope"), 1,
        "database error")
    assert_one_line_error(in_process("jobs", "--db", f"sqlite:///{tmp_path}/missing/dir/x.db"),
                          1, "does not exist")
    assert_one_line_error(in_process("jobs", "--db", "postgresql+psycopg://u@h:port/db"), 1,
                          "malformed")


def test_bad_settings_name_the_variable(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/s.db"
    proc = in_process("jobs", "--db", db, env={"SYNCBRIDGE_MAX_RETRIES": "lots"})
    assert_one_line_error(proc, 2, "SYNCBRIDGE_MAX_RETRIES")
    proc = in_process("jobs", "--db", db, env={"SYNCBRIDGE_LEASE_SECONDS": "-1"})
    assert_one_line_error(proc, 2, "SYNCBRIDGE_LEASE_SECONDS")
    proc = in_process("jobs", "--db", db, env={"SYNCBRIDGE_CRM_URL": "ftp://x"})
    assert_one_line_error(proc, 2, "SYNCBRIDGE_CRM_URL")


def test_bulk_enqueue_from_stdin(url: str) -> None:
    proc = in_process("enqueue", "invoice", "--from-file", "-", "--db", url,
                      stdin="i_1\ni_2\ni_1\n")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["created"] == 2 and len(out["jobs"]) == 3


def test_demo_worker_metrics_end_to_end(url: str) -> None:
    env = {"SYNCBRIDGE_JOB_BACKOFF_SECONDS_BASE": "0.01", "SYNCBRIDGE_POLL_SECONDS": "0.02",
           "SYNCBRIDGE_DEMO": "1"}
    assert run("demo", db=url, env=env).returncode == 0
    worker = run("--worker-only", "--until-empty", db=url, env=env)
    assert worker.returncode == 0, worker.stderr
    # Headless logs are JSON lines on stderr with the job's correlation id bound.
    events = [json.loads(line) for line in worker.stderr.splitlines()]
    finished = [e for e in events if e["event"] == "attempt.finished"]
    assert finished
    database = Database(url)
    try:
        stored = {j.id: j for j in reads.list_jobs(database, limit=1000)}
    finally:
        database.dispose()
    for e in finished:
        assert e["correlation_id"] == stored[e["job_id"]].correlation_id, e
    assert {e["job_id"] for e in finished} == set(stored)  # every job logged its attempts
    # The worker above and `metrics --json` are real processes; the reads after them check
    # what they print, in this process.
    metrics = json.loads(run("metrics", "--json", db=url).stdout)
    assert metrics["by_status"] == {"pending": 0, "running": 0, "success": 4, "failed": 2,
                                    "dead": 2, "canceled": 0}
    assert metrics["dead_letter_depth"] == 2
    assert metrics["retry_count"] == 2 * 2 + 2 * 3
    assert metrics["per_type"]["invoice"]["total_jobs"] == 3
    jobs = json.loads(in_process("jobs", "--status", "dead", "--json", "--db", url).stdout)
    assert {j["entity_id"] for j in jobs} == {"c_1002", "i_2002"}
    shown = json.loads(in_process("show", str(jobs[0]["id"]), "--json", "--db", url).stdout)
    assert len(shown["attempts"]) == 4
    replay = in_process("replay", str(jobs[0]["id"]), "--db", url)
    assert replay.returncode == 0 and "replayed as job" in replay.stdout
    text = in_process("metrics", "--db", url)
    assert text.returncode == 0, text.stderr
    # The text table's counts are the database's (the replay added one pending job).
    table = text.stdout.strip().split("\n\n")[0]  # then a blank line and the retention line
    header, *rows = [line.split() for line in table.splitlines()]
    # TYPE, TOTAL, six statuses, SUCCESS%, RETRIES: the columns before a two-word header
    shown = {row[0]: dict(zip(header[1:10], row[1:10], strict=True)) for row in rows}
    assert set(shown) == {"all", "customer", "invoice"}
    expected = _counts_in_database(url)
    for job_type, counts in expected.items():
        assert {k: int(shown[job_type][k]) for k in counts} == counts, job_type


def _counts_in_database(url: str) -> dict[str, dict[str, int]]:
    """Per job type and for all: TOTAL, each status, RETRIES (attempts beyond the first),
    read from the database itself."""
    database = Database(url)
    try:
        with database.read() as conn:
            rows = list(conn.execute(select(jobs_t.c.job_type, jobs_t.c.status,
                                            jobs_t.c.attempt_count)))
    finally:
        database.dispose()
    out: dict[str, dict[str, int]] = {}
    for job_type, status, attempts in rows:
        for key in (job_type, "all"):
            counts = out.setdefault(key, dict.fromkeys(
                ["TOTAL", "PENDING", "RUNNING", "SUCCESS", "FAILED", "DEAD", "CANCELED",
                 "RETRIES"], 0))
            counts["TOTAL"] += 1
            counts[status.upper()] += 1
            counts["RETRIES"] += max(0, attempts - 1)
    return out


def test_db_upgrade_is_idempotent(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/u.db"
    first = run("db", "upgrade", db=db)
    assert first.returncode == 0 and "upgraded to" in first.stdout
    second = in_process("db", "upgrade", "--db", db)
    assert second.returncode == 0 and "already at" in second.stdout
    database = Database(db)
    try:
        assert current_revision(database) == head_revision() is not None
    finally:
        database.dispose()
