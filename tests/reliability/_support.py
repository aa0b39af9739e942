"""Shared machinery for the reliability tests: real worker processes, a real mock upstream
over loopback HTTP, database inspection, and the figures each scenario publishes.

Every subprocess is started through `Procs`, which bounds it with a deadline and kills it
(SIGKILL, after SIGCONT in case it is stopped) in the test's finalizer.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text

import core.enqueue
from core.db import Database
from core.demo import registry
from core.models import attempts_t, jobs_t
from core.statuses import ACTIVE_STATUSES
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable

# Allowed (old status -> new status) moves of a stored job, from DESIGN.md's lifecycle.
LEGAL_TRANSITIONS = {
    ("pending", "running"),  # claim
    ("pending", "canceled"),  # cancel
    ("running", "success"),
    ("running", "pending"),  # retryable error with budget left, lease expiry, release
    ("running", "dead"),  # budget spent (error or lease expiry)
    ("running", "failed"),
    ("running", "canceled"),
    ("failed", "pending"),  # operator retry
    ("dead", "pending"),  # operator retry
}


def clean_env(**settings: Any) -> dict[str, str]:
    """The environment for a child: ours without any SYNCBRIDGE_* plus the given settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCBRIDGE_")}
    env["PYTHONUNBUFFERED"] = "1"
    for key, value in settings.items():
        if value is not None:
            env[f"SYNCBRIDGE_{key.upper()}"] = str(value)
    return env


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    deadline: float
    log_file: Path | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, sig)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not exit within {timeout}s\n"
                                 + self.tail()) from None

    def err_text(self) -> str:
        return self.stderr.read_text(errors="replace") if self.stderr.exists() else ""

    def out_text(self) -> str:
        return self.stdout.read_text(errors="replace") if self.stdout.exists() else ""

    def log_events(self) -> list[dict[str, Any]]:
        if self.log_file is None or not self.log_file.exists():
            return []
        events = []
        for line in self.log_file.read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def tail(self, n: int = 15) -> str:
        parts = [f"--- {self.name} stderr ---", *self.err_text().splitlines()[-n:]]
        if self.log_file is not None and self.log_file.exists():
            parts += [f"--- {self.name} log ---",
                      *self.log_file.read_text(errors="replace").splitlines()[-n:]]
        return "\n".join(parts)


class Procs:
    """Starts bounded subprocesses and guarantees they are dead when the test ends."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[Proc] = []

    def start(self, name: str, args: Sequence[str], env: dict[str, str], *,
              max_seconds: float = 240.0, log_file: Path | None = None,
              module: str = "syncbridge_tui") -> Proc:
        out, err = self.tmp / f"{name}.out", self.tmp / f"{name}.err"
        popen = subprocess.Popen(
            [PYTHON, "-m", module, *args], cwd=ROOT, env=env,
            stdin=subprocess.DEVNULL, stdout=out.open("wb"), stderr=err.open("wb"),
        )
        proc = Proc(name, popen, out, err, time.monotonic() + max_seconds, log_file)
        self.procs.append(proc)
        return proc

    def check_deadlines(self) -> None:
        for p in self.procs:
            if p.alive() and time.monotonic() > p.deadline:
                self.kill(p)
                raise AssertionError(f"{p.name} outlived its deadline\n{p.tail()}")

    @staticmethod
    def kill(p: Proc) -> None:
        if p.popen.poll() is None:
            try:
                os.kill(p.pid, signal.SIGCONT)
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.popen.wait(timeout=10)

    def kill_all(self) -> None:
        for p in self.procs:
            self.kill(p)

    def tracebacks(self) -> list[str]:
        return [p.name for p in self.procs if "Traceback" in p.err_text()]

    def tails(self) -> str:
        return "\n".join(p.tail() for p in self.procs)


@dataclass
class WorkerSpec:
    """Settings for a worker process (SYNCBRIDGE_* names without the prefix)."""

    lease_seconds: float = 2.0
    poll_seconds: float = 0.05
    job_backoff_seconds_base: float = 0.05
    job_backoff_seconds_cap: float = 0.2
    shutdown_timeout_seconds: float = 5.0
    http_timeout_seconds: float = 10.0
    concurrency: int = 8
    extra: dict[str, Any] = field(default_factory=dict)


def start_worker(procs: Procs, name: str, db_url: str, upstream: str | None, *,
                 spec: WorkerSpec | None = None, until_empty: bool = False,
                 max_seconds: float = 240.0, crm_url: str | None = None) -> Proc:
    spec = spec or WorkerSpec()
    log_file = procs.tmp / f"{name}.log"
    settings: dict[str, Any] = dict(log_file=log_file, log_level="info", demo=1)
    settings.update(spec.extra)  # e.g. log_level="debug"
    env = clean_env(
        database_url=db_url,
        crm_url=crm_url or (f"{upstream}/crm" if upstream else None),
        billing_url=f"{upstream}/billing" if upstream else None,
        lease_seconds=spec.lease_seconds, poll_seconds=spec.poll_seconds,
        job_backoff_seconds_base=spec.job_backoff_seconds_base,
        job_backoff_seconds_cap=spec.job_backoff_seconds_cap,
        shutdown_timeout_seconds=spec.shutdown_timeout_seconds,
        http_timeout_seconds=spec.http_timeout_seconds,
        **settings,
    )
    args = ["--worker-only", "--concurrency", str(spec.concurrency), "--db", db_url]
    if until_empty:
        args.append("--until-empty")
    return procs.start(name, args, env, max_seconds=max_seconds, log_file=log_file)


def wait_running(procs: Procs, proc: Proc, db: Database, *, timeout: float = 30.0) -> None:
    """Until `proc` has written its first heartbeat (it is up and connected)."""
    def up() -> bool:
        procs.check_deadlines()
        if not proc.alive():
            raise AssertionError(f"{proc.name} exited early\n{proc.tail()}")
        return worker_id_of(db, proc.pid) is not None

    wait_for(up, timeout=timeout, message=f"{proc.name} to start")


def worker_id_of(db: Database, pid: int) -> str | None:
    with db.read() as conn:
        rows = conn.execute(text("SELECT id FROM sync_workers")).scalars().all()
    for wid in rows:
        if wid.split(":")[-2] == str(pid):
            return str(wid)
    return None


# --- the mock upstream ------------------------------------------------------------------------

def start_mock(procs: Procs, name: str = "mock") -> str:
    proc = procs.start(name, ["mock-upstream", "--port", "0"], clean_env(), max_seconds=900)

    def url() -> str | None:
        for line in proc.out_text().splitlines():
            if line.startswith("mock upstream on "):
                return line.split()[-1]
        if not proc.alive():
            raise AssertionError(f"mock upstream exited\n{proc.tail()}")
        return None

    return wait_for(url, timeout=20, message="mock upstream to listen")


def billing_writes(upstream: str) -> Counter[str]:
    with urllib.request.urlopen(f"{upstream}/_stats", timeout=10) as resp:
        return Counter(json.loads(resp.read())["billing_writes"])


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- enqueue and inspection -------------------------------------------------------------------

def enqueue(db: Database, job_type: str, ids: Iterable[str], max_attempts: int) -> list[int]:
    res = core.enqueue.enqueue_many(db, job_type, list(ids), known_types=registry.names(),
                             max_attempts=max_attempts)
    return [r.job_id for r in res]


def status_counts(db: Database) -> Counter[str]:
    with db.read() as conn:
        rows = conn.execute(select(jobs_t.c.status, func.count()).group_by(jobs_t.c.status))
        return Counter({s: n for s, n in rows})


def all_jobs(db: Database) -> dict[int, Any]:
    with db.read() as conn:
        return {r.id: r for r in conn.execute(select(jobs_t))}


def all_attempts(db: Database) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    with db.read() as conn:
        for r in conn.execute(select(attempts_t).order_by(attempts_t.c.job_id,
                                                           attempts_t.c.number)):
            out.setdefault(r.job_id, []).append(r)
    return out


def active_count(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(jobs_t).where(
            jobs_t.c.status.in_(ACTIVE_STATUSES))).scalar() or 0)


def drained(db: Database) -> bool:
    return active_count(db) == 0


def duplicate_active_entities(db: Database) -> list[tuple[str, str, int]]:
    with db.read() as conn:
        return [tuple(r) for r in conn.execute(
            select(jobs_t.c.job_type, jobs_t.c.entity_id, func.count())
            .where(jobs_t.c.status.in_(ACTIVE_STATUSES))
            .group_by(jobs_t.c.job_type, jobs_t.c.entity_id)
            .having(func.count() > 1))]  # type: ignore[misc]


APPLIED_OUTCOMES = ("success", "retry", "dead", "failed")


def overlapping_attempts(attempts: dict[int, list[Any]]) -> list[tuple[int, int, int]]:
    """Pairs of attempts of one job whose results were both applied and whose run intervals
    overlap: the job executed on two workers at once with both results counted."""
    bad = []
    for job_id, rows in attempts.items():
        applied = sorted((a for a in rows if a.outcome in APPLIED_OUTCOMES),
                         key=lambda a: a.started_at)
        for a, b in itertools.pairwise(applied):
            if b.started_at < a.finished_at:
                bad.append((job_id, a.number, b.number))
    return bad


def leases_of(db: Database, worker_id: str) -> list[tuple[int, int]]:
    """(job, attempt number) of the attempts a worker has in flight: its live leases."""
    with db.read() as conn:
        return [(r[0], r[1]) for r in conn.execute(
            select(jobs_t.c.id, jobs_t.c.lease_token).where(
                jobs_t.c.lease_owner == worker_id, jobs_t.c.status == "running"))]


def stuck_jobs(db: Database) -> list[int]:
    """Jobs left running, or pending: after a drain neither may remain."""
    with db.read() as conn:
        return list(conn.execute(select(jobs_t.c.id).where(
            jobs_t.c.status.in_(ACTIVE_STATUSES))).scalars())


def missing_attempts(jobs: dict[int, Any], attempts: dict[int, list[Any]]
                     ) -> list[tuple[int, int]]:
    """(job, number) of claims whose attempt row was never written. Every claim takes the
    next lease token, which is its attempt's number, and its row is written when it ends:
    so a job has rows 1..lease_token, except the one in flight while it is running."""
    bad = []
    for job_id, job in jobs.items():
        last = job.lease_token - (1 if job.status == "running" else 0)
        have = {a.number for a in attempts.get(job_id, [])}
        bad += [(job_id, n) for n in range(1, last + 1) if n not in have]
    return bad


def budget_violations(jobs: dict[int, Any], attempts: dict[int, list[Any]]) -> list[int]:
    """Jobs whose attempt_count is not the number of attempts that spent budget (all but
    released ones) - for jobs never retried by an operator."""
    bad = []
    for job_id, job in jobs.items():
        spent = sum(1 for a in attempts.get(job_id, []) if a.outcome != "released")
        if job.attempt_count != spent:
            bad.append(job_id)
    return bad


# --- database-side fault tools ----------------------------------------------------------------

def sqlite_path(db_url: str) -> str:
    return db_url.split("sqlite:///", 1)[1]


def sqlite_lock_free(db_url: str) -> bool:
    """True if nobody holds the SQLite write lock right now (we take and drop it)."""
    conn = sqlite3.connect(sqlite_path(db_url), timeout=0.2, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


def pg_busy_sessions(db: Database) -> int:
    """Sessions on our database, other than this one, that are inside a transaction."""
    with db.read() as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
            "AND (state LIKE 'idle in transaction%' OR state = 'active') "
            "AND query NOT ILIKE 'LISTEN%'")).scalar() or 0)


def pg_terminate_others(db: Database) -> int:
    """pg_terminate_backend every other client session on our database; returns how many."""
    with db.write() as conn:
        return int(conn.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'")).scalar() or 0)


def install_transition_log(db: Database) -> None:
    """A trigger recording every status change of a job, so tests can check each move."""
    with db.write() as conn:
        if db.is_postgres:
            conn.execute(text(
                "CREATE TABLE IF NOT EXISTS rel_transitions (id bigserial PRIMARY KEY, "
                "job_id integer, old text, new text)"))
            conn.execute(text("TRUNCATE rel_transitions"))
            conn.execute(text(
                "CREATE OR REPLACE FUNCTION rel_log_transition() RETURNS trigger AS $$ "
                "BEGIN IF NEW.status IS DISTINCT FROM OLD.status THEN "
                "INSERT INTO rel_transitions(job_id, old, new) "
                "VALUES (NEW.id, OLD.status, NEW.status); END IF; RETURN NEW; END $$ "
                "LANGUAGE plpgsql"))
            conn.execute(text("DROP TRIGGER IF EXISTS rel_transition ON sync_jobs"))
            conn.execute(text(
                "CREATE TRIGGER rel_transition AFTER UPDATE ON sync_jobs FOR EACH ROW "
                "EXECUTE FUNCTION rel_log_transition()"))
        else:
            conn.execute(text(
                "CREATE TABLE IF NOT EXISTS rel_transitions (id INTEGER PRIMARY KEY, "
                "job_id INTEGER, old TEXT, new TEXT)"))
            conn.execute(text("DELETE FROM rel_transitions"))
            conn.execute(text(
                "CREATE TRIGGER IF NOT EXISTS rel_transition AFTER UPDATE OF status ON "
                "sync_jobs WHEN NEW.status IS NOT OLD.status BEGIN "
                "INSERT INTO rel_transitions(job_id, old, new) "
                "VALUES (NEW.id, OLD.status, NEW.status); END"))


def remove_transition_log(db: Database) -> None:
    with db.write() as conn:
        if db.is_postgres:
            conn.execute(text("DROP TRIGGER IF EXISTS rel_transition ON sync_jobs"))
            conn.execute(text("DROP FUNCTION IF EXISTS rel_log_transition()"))
        else:
            conn.execute(text("DROP TRIGGER IF EXISTS rel_transition"))
        conn.execute(text("DROP TABLE IF EXISTS rel_transitions"))


def transitions(db: Database) -> list[tuple[int, str, str]]:
    with db.read() as conn:
        return [tuple(r) for r in conn.execute(  # type: ignore[misc]
            text("SELECT job_id, old, new FROM rel_transitions ORDER BY id"))]


def illegal_transitions(db: Database) -> list[tuple[int, str, str]]:
    return [t for t in transitions(db) if (t[1], t[2]) not in LEGAL_TRANSITIONS]
