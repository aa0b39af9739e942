"""A team's own app through the command line (SQLite and PostgreSQL): --app loading, its
job types everywhere, per-type policies (retry budget, backoff, retry_on, timeout,
RetryLater), upstreams as configuration, `check`, and demo mode. Workers, the console and
each command's first use run as real processes; checks of what a command prints and exits
with run through main() in this process (`cli`)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from core import reads
from core.db import Database
from core.migrations import alembic_config
from tests.helpers import in_process

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "syncbridge_tui"]
APP = "tests.apps.sbtestapp:registry"
FAST = {"SYNCBRIDGE_POLL_SECONDS": "0.02", "SYNCBRIDGE_JOB_BACKOFF_SECONDS_BASE": "0.01",
        "SYNCBRIDGE_JOB_BACKOFF_SECONDS_CAP": "0.02"}
LEDGER_ENV = {"SBTEST_LEDGER_URL": "http://127.0.0.1:9", "SBTEST_LEDGER_TOKEN": "tok"}


def run(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT,
        timeout: float = 90) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items()
            if not k.startswith(("SYNCBRIDGE_", "SBTEST_"))}
    full["PYTHONPATH"] = str(ROOT)
    full.update(env or {})
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=full, cwd=cwd,
                          timeout=timeout)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`run`, in this process (tests.helpers.in_process): the apps under tests/apps import
    as they do from the repository's root."""
    return in_process(*args, env=env, drop=("SYNCBRIDGE_", "SBTEST_"))


def one_line_error(proc: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def enqueue(db_url: str, job_type: str, entity: str) -> dict[str, Any]:
    proc = cli("enqueue", job_type, entity, "--app", APP, "--db", db_url)
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


# --- the app's jobs, run by the headless worker ----------------------------------------------

def test_app_jobs_run_under_worker_only_with_their_policies(db_url: str, db: Database) -> None:
    echo = enqueue(db_url, "echo", "e1")
    hang = enqueue(db_url, "hang", "h1")
    later = enqueue(db_url, "later", "l1")
    flaky = enqueue(db_url, "flaky", "f1")
    # The retry budget is the type's, taken at enqueue; echo has none: the settings' (3+1).
    assert (echo["max_attempts"], hang["max_attempts"], later["max_attempts"],
            flaky["max_attempts"]) == (4, 2, 3, 3)

    worker = run("--worker-only", "--until-empty", "--app", APP, "--db", db_url,
                 env={**FAST, **LEDGER_ENV})
    assert worker.returncode == 0, worker.stderr

    job = reads.get_job(db, echo["id"])
    assert job is not None and job.status == "success"
    assert job.result == {"entity": "e1", "payload": None, "attempt": 1}

    # A handler that hangs is cancelled at its timeout: attempt outcome `timeout`, then the
    # budget decides (2 attempts: retry, then dead).
    job = reads.get_job(db, hang["id"])
    assert job is not None and job.status == "dead" and job.attempt_count == 2
    attempts = reads.attempts_for(db, hang["id"])
    assert [a.outcome for a in attempts] == ["timeout", "timeout"]
    assert all(a.duration_ms is not None and 250 <= a.duration_ms < 5000 for a in attempts)
    assert job.dead_error_type == "Timeout" and "0.3s timeout" in (job.dead_error or "")

    # RetryLater(retry_in=1.5) is honoured although the type's backoff is 0.
    job = reads.get_job(db, later["id"])
    assert job is not None and job.status == "success" and job.attempt_count == 2
    first, second = reads.attempts_for(db, later["id"])
    assert first.outcome == "retry" and first.finished_at is not None
    assert second.started_at >= first.finished_at + 1.5

    # retry_on makes a plain exception retryable; the budget (3) ends it dead.
    job = reads.get_job(db, flaky["id"])
    assert job is not None and job.status == "dead" and job.attempt_count == 3
    attempts = reads.attempts_for(db, flaky["id"])
    assert [a.outcome for a in attempts] == ["retry", "retry", "dead"]
    assert {a.error_type for a in attempts} == {"Flaky"}
    # The type's backoff (0.05 s), not the settings' (0.01-0.02 s).
    gaps = [b.started_at - a.finished_at for a, b in itertools.pairwise(attempts)
            if a.finished_at is not None]
    assert gaps and all(g >= 0.05 for g in gaps), gaps


def test_enqueue_jobs_metrics_and_help_see_the_app_types(db_url: str) -> None:
    enqueue(db_url, "echo", "e1")
    # Without demo mode the demo's types are not the app's.
    proc = cli("enqueue", "customer", "c_1", "--app", APP, "--db", db_url)
    one_line_error(proc, 2, "unknown job type 'customer'", "echo")

    proc = cli("jobs", "--app", APP, "--type", "echo", "--json", "--db", db_url)
    assert proc.returncode == 0, proc.stderr
    assert [j["job_type"] for j in json.loads(proc.stdout)] == ["echo"]

    proc = cli("metrics", "--app", APP, "--json", "--db", db_url)
    assert proc.returncode == 0, proc.stderr
    per_type = json.loads(proc.stdout)["per_type"]
    assert sorted(per_type) == ["echo", "flaky", "hang", "later", "ledger"]
    assert per_type["echo"]["total_jobs"] == 1 and per_type["ledger"]["total_jobs"] == 0

    proc = run("enqueue", "--help", "--app", APP)
    assert proc.returncode == 0
    assert "echo, flaky, hang, later, ledger" in " ".join(proc.stdout.split())

    # In demo mode the demo's types are added to the app's.
    proc = cli("metrics", "--app", APP, "--demo", "--json", "--db", db_url)
    assert {"customer", "invoice", "echo"} <= set(json.loads(proc.stdout)["per_type"])


def test_app_from_the_current_directory_and_the_default_registry(tmp_path: Path) -> None:
    (tmp_path / "myjobs.py").write_text(
        "from core.handlers import job_type\n\n"
        "@job_type('mine', max_attempts=9)\n"
        "async def mine(ctx):\n    return {'ok': True}\n")
    url = f"sqlite:///{tmp_path}/cwd.db"
    proc = run("enqueue", "mine", "m1", "--app", "myjobs", "--db", url, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["max_attempts"] == 9
    proc = run("--worker-only", "--until-empty", "--db", url, cwd=tmp_path,
               env={"SYNCBRIDGE_APP": "myjobs", **FAST})
    assert proc.returncode == 0, proc.stderr
    db = Database(url)
    try:
        [job] = reads.list_jobs(db)
        assert job.status == "success" and job.result == {"ok": True}
    finally:
        db.dispose()


@pytest.mark.parametrize(("spec", "fragments"), [
    ("tests.apps.nope", ("cannot load app 'tests.apps.nope'", "no module named")),
    ("tests.apps.sbtestapp:missing", ("has no attribute 'missing'",)),
    ("tests.apps.broken_app", ("importing tests.apps.broken_app failed",
                               "RuntimeError: boom while importing the app")),
    ("tests.apps.sbtestapp:not_a_registry", ("not_a_registry is a int",)),
    ("tests.apps.sbtestapp:", ("expected MODULE or MODULE:ATTR",)),
])
@pytest.mark.parametrize("command", [["jobs"], ["--worker-only"], ["enqueue", "x", "y"]])
def test_a_bad_app_is_one_line_and_exit_2(tmp_path: Path, spec: str,
                                          fragments: tuple[str, ...],
                                          command: list[str]) -> None:
    # One refusal through a real worker process; the rest share its loading, in this process.
    go = run if command == ["--worker-only"] and spec == "tests.apps.broken_app" else cli
    proc = go(*command, "--app", spec, "--db", f"sqlite:///{tmp_path}/bad.db")
    one_line_error(proc, 2, *fragments)


def test_an_attr_may_be_a_function_returning_the_registry(tmp_path: Path) -> None:
    proc = cli("metrics", "--json", "--app", "tests.apps.sbtestapp:make_registry",
               "--db", f"sqlite:///{tmp_path}/f.db")
    assert proc.returncode == 0, proc.stderr
    assert "hang" in json.loads(proc.stdout)["per_type"]


# --- upstreams -------------------------------------------------------------------------------

class _Ledger:
    """A loopback HTTP upstream that records what it was sent."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                outer.requests.append((self.command, self.path, dict(self.headers.items())))
                body = json.dumps({"entry": self.path.rsplit("/", 1)[-1]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def ledger() -> Iterator[_Ledger]:
    server = _Ledger()
    yield server
    server.close()


def test_a_job_calls_its_upstream_with_url_headers_and_correlation_id(
        db_url: str, db: Database, ledger: _Ledger) -> None:
    job = enqueue(db_url, "ledger", "L-1")
    proc = run("--worker-only", "--until-empty", "--app", APP, "--db", db_url,
               env={**FAST, "SBTEST_LEDGER_URL": ledger.url, "SBTEST_LEDGER_TOKEN": "t0k3n"})
    assert proc.returncode == 0, proc.stderr
    done = reads.get_job(db, job["id"])
    assert done is not None and done.status == "success" and done.result == {"entry": "L-1"}
    [(method, path, headers)] = ledger.requests
    assert (method, path) == ("POST", "/v1/entries/L-1")
    assert headers["Authorization"] == "Bearer t0k3n"
    assert headers["X-Static"] == "static-secret-value"
    assert headers["X-Correlation-ID"] == job["correlation_id"]


def test_settings_url_wins_over_the_apps(db_url: str, db: Database, ledger: _Ledger) -> None:
    job = enqueue(db_url, "ledger", "L-2")
    proc = run("--worker-only", "--until-empty", "--app", APP, "--db", db_url,
               env={**FAST, "SBTEST_LEDGER_URL": "http://127.0.0.1:9/wrong",
                    "SYNCBRIDGE_UPSTREAM_LEDGER_URL": ledger.url,
                    "SBTEST_LEDGER_TOKEN": "x"})
    assert proc.returncode == 0, proc.stderr
    done = reads.get_job(db, job["id"])
    assert done is not None and done.status == "success"
    assert [p for _, p, _ in ledger.requests] == ["/v1/entries/L-2"]


def test_a_worker_without_an_upstream_url_refuses_to_start(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/nourl.db"
    proc = run("--worker-only", "--app", APP, "--db", url, env={"SBTEST_LEDGER_TOKEN": "x"})
    one_line_error(proc, 2, "upstream 'ledger'", "has no URL", "SYNCBRIDGE_UPSTREAM_LEDGER_URL",
                   "SBTEST_LEDGER_URL")
    # The refusal comes before the worker configures logging or connects: in this process.
    proc = cli("--worker-only", "--app", APP, "--db", url,
               env={"SBTEST_LEDGER_URL": "http://127.0.0.1:9"})
    one_line_error(proc, 2, "upstream 'ledger'", "${SBTEST_LEDGER_TOKEN}", "not set")
    # The demo app outside demo mode: its CRM and Billing have no URL either.
    proc = cli("--worker-only", "--db", url)
    one_line_error(proc, 2, "upstream 'billing'", "SYNCBRIDGE_BILLING_URL", "--demo")
    assert not Path(f"{tmp_path}/nourl.db").exists()  # refused before connecting


def test_no_upstream_call_reaches_the_mock_outside_demo_mode(settings: Any, db: Database
                                                             ) -> None:
    from core.demo import registry as demo
    from core.integrations.clients import UpstreamConfigError
    from core.integrations.mock import MockUpstream
    from core.worker import Worker

    mock = MockUpstream()
    not_demo = settings.model_copy(update={"demo": False})
    with pytest.raises(UpstreamConfigError, match="upstream 'billing'"):
        Worker(db, not_demo, registry=demo, mock=mock)
    # One URL set is not enough: the other is still refused, not mocked.
    half = settings.model_copy(update={"demo": False, "crm_url": "http://127.0.0.1:9"})
    with pytest.raises(UpstreamConfigError, match="upstream 'billing'"):
        Worker(db, half, registry=demo, mock=mock)
    assert mock.requests == 0
    # In demo mode the same worker uses the mock (the counter moves).
    from core import enqueue as enq

    enq.enqueue(db, "customer", "c_1001", known_types=demo.names(), max_attempts=2)
    import asyncio

    asyncio.run(Worker(db, settings, registry=demo, mock=mock).run(until_empty=True))
    assert mock.requests == 2


# --- check -----------------------------------------------------------------------------------

def test_check_lists_types_policies_and_masked_upstreams(db_url: str, db: Database) -> None:
    env = {"SBTEST_LEDGER_URL": "https://ops:hunter2@ledger.example/api?key=k3y",
           "SBTEST_LEDGER_TOKEN": "t0ps3cret"}
    proc = run("check", "--app", APP, "--db", db_url, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert proc.stderr == ""
    types_part, upstreams_part = out.split("\nupstreams:\n")
    lines = {line.split()[0]: line.split() for line in types_part.splitlines() if line.strip()}
    # TYPE UPSTREAMS ATTEMPTS BACKOFF JITTER TIMEOUT RETRY-ON
    assert lines["hang"][1:6] == ["-", "2", "0s..0s", "0", "0.3s"]
    assert lines["flaky"][2] == "3" and lines["flaky"][6] == "tests.apps.sbtestapp.Flaky"
    assert lines["ledger"][1] == "ledger"
    [ledger_row] = [ln for ln in upstreams_part.splitlines() if ln.startswith("ledger")]
    assert ledger_row.split()[1:4] == ["https://***@ledger.example/api?key=***",
                                       "SBTEST_LEDGER_URL", "5s"]
    assert "Authorization: ${SBTEST_LEDGER_TOKEN}" in out and "X-Static: ***" in out
    for secret in ("hunter2", "k3y", "t0ps3cret", "static-secret-value", "ops:"):
        assert secret not in out
    assert "schema at head" in out and "ok: ready" in out


def test_check_fails_on_problems_and_writes_nothing(tmp_path: Path) -> None:
    # No database file: a problem, and check does not create one.
    missing = tmp_path / "missing.db"
    proc = cli("check", "--app", APP, "--db", f"sqlite:///{missing}", env=LEDGER_ENV)
    assert proc.returncode == 1 and "does not exist" in proc.stderr
    assert not missing.exists()

    # A schema behind head: reported, not migrated.
    from alembic import command

    behind = tmp_path / "behind.db"
    db = Database(f"sqlite:///{behind}")
    try:
        with db.engine.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0005")
        proc = cli("check", "--app", APP, "--db", f"sqlite:///{behind}", env=LEDGER_ENV)
        assert proc.returncode == 1, proc.stdout
        [line] = proc.stderr.strip().splitlines()
        assert "schema is at 0005" in line and "syncbridge db upgrade" in line
        from core.migrations import current_revision

        assert current_revision(db) == "0005"
    finally:
        db.dispose()

    # Unreachable, and an upstream without a URL: one line each.
    proc = cli("check", "--app", APP, "--db", "postgresql+psycopg://postgres@127.0.0.1:1/x")
    assert proc.returncode == 1
    problems = proc.stderr.strip().splitlines()
    assert len(problems) == 3 and "Traceback" not in proc.stderr, problems
    assert "database unreachable" in problems[0]
    assert "upstream 'ledger'" in problems[1] and "no URL" in problems[1]
    assert "${SBTEST_LEDGER_TOKEN}" in problems[2] and "not set" in problems[2]


# --- the console -----------------------------------------------------------------------------

def test_console_refuses_when_an_upstream_has_no_url(tmp_path: Path) -> None:
    proc = run("--app", APP, "--db", f"sqlite:///{tmp_path}/c.db",
               env={"SBTEST_LEDGER_TOKEN": "x"}, timeout=60)
    one_line_error(proc, 2, "upstream 'ledger'")


def _python(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCBRIDGE_", "SBTEST_"))}
    env.update(PYTHONPATH=str(ROOT), **LEDGER_ENV)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)


def test_the_library_logs_nothing_until_logging_is_configured(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/lib.db"
    run_jobs = (
        "from core.client import SyncBridge\n"
        "from tests.apps.sbtestapp import registry\n"
        f"sb = SyncBridge({url!r}, app=registry, poll_seconds=0.02)\n"
        "sb.enqueue('echo', 'e1'); sb.enqueue('flaky', 'f1')\n"
        "sb.run_worker(until_empty=True)\n"
        "assert sb.get(1).status == 'success' and sb.get(2).status == 'dead'\n"
        "sb.close()\n")
    proc = _python(run_jobs)
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout, proc.stderr) == ("", "")
    # Configured, the same run writes its JSON lines (so the silence above is not luck).
    proc = _python("from core import logging as sblog\nsblog.configure()\n"
                   + run_jobs.replace("lib.db", "lib2.db"))
    assert proc.returncode == 0 and '"event": "attempt.finished"' in proc.stderr


def test_jobs_imports_neither_structlog_nor_rich(tmp_path: Path) -> None:
    proc = _python("import sys\nfrom syncbridge_tui.cli import main\n"
                   f"main(['jobs', '--db', 'sqlite:///{tmp_path}/j.db', '--json'])\n"
                   "print('LOADED', 'structlog' in sys.modules, 'rich' in sys.modules)\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "LOADED False False"
