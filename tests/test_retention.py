"""Retention (core.retention, `syncbridge prune`, the worker's pruner) on SQLite and PostgreSQL:
the right rows go and nothing else, attempts with their jobs, replay lineage kept, one pruner
at a time, a pruner killed mid-batch leaves consistent tables, --dry-run and --archive say
exactly what prune deletes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, inspect, select, text

from core import clock, metrics, retention
from core.config import Settings, load_settings
from core.db import Database
from core.migrations import current_revision, head_revision
from core.models import attempts_t, audit_t, jobs_t, leases_t
from core.retention import BatchSizer, RetentionPolicy, Tuning
from tests.helpers import async_wait_for
from tests.test_cli import assert_one_line_error, cli  # noqa: F401 - the fixture
from tests.test_migrations import _migrate, empty_db  # noqa: F401 - the fixture

DAY = 86400.0
NOW = 1_800_000_000.0
CliRun = Callable[..., subprocess.CompletedProcess[str]]


@dataclass(slots=True)
class Seeded:
    id: int
    status: str
    job_type: str
    age_days: float | None  # since finished_at; None: not finished
    attempts: int
    replay_of: int | None = None


def seed(db: Database, rows: list[tuple[str, str, float | None, int]], *,
         replay_of: dict[int, int] | None = None, now: float = NOW) -> list[Seeded]:
    """Jobs (status, job_type, age in days of finished_at or None, attempts) with attempt
    rows 1..attempts (lease_token = attempts). `replay_of`: row index -> an earlier row."""
    out: list[Seeded] = []
    replay_of = replay_of or {}
    with db.write() as conn:
        pending: list[dict[str, Any]] = []
        for i, (status, job_type, age, attempts) in enumerate(rows):
            origin = out[replay_of[i]].id if i in replay_of else None
            finished = None if age is None else now - age * DAY
            created = (finished or now) - 10
            values = dict(
                job_type=job_type, entity_id=f"e_{i}", status=status, payload={"i": i},
                correlation_id=f"corr{i}", attempt_count=attempts, max_attempts=4,
                next_run_at=created, lease_token=attempts, is_replay=origin is not None,
                replay_of_job_id=origin, created_at=created, updated_at=created,
                finished_at=finished, lease_owner="w" if status == "running" else None,
                lease_expires_at=now + 3600 if status == "running" else None)
            out.append(Seeded(0, status, job_type, age, attempts, origin))
            if replay_of:  # one at a time: a replay needs its original's id
                out[-1].id = int(conn.execute(jobs_t.insert().values(**values)
                                              .returning(jobs_t.c.id)).scalar_one())
            else:
                pending.append(values)
        if pending:
            ids = conn.execute(jobs_t.insert().returning(
                jobs_t.c.id, sort_by_parameter_order=True), pending).scalars().all()
            for seeded, job_id in zip(out, ids, strict=True):
                seeded.id = int(job_id)
        attempt_rows = [dict(job_id=x.id, number=n, worker_id="w", started_at=now - 10 + n,
                             finished_at=now - 9.5 + n, duration_ms=500.0,
                             outcome=x.status if n == x.attempts and x.status != "running"
                             else "retry")
                        for x in out for n in range(1, x.attempts + 1)]
        if attempt_rows:
            conn.execute(attempts_t.insert(), attempt_rows)
    return out


def job_ids(db: Database) -> set[int]:
    with db.read() as conn:
        return set(conn.execute(select(jobs_t.c.id)).scalars())


def attempts_by_job(db: Database) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    with db.read() as conn:
        for job_id, number in conn.execute(select(attempts_t.c.job_id, attempts_t.c.number)
                                           .order_by(attempts_t.c.job_id, attempts_t.c.number)):
            out.setdefault(int(job_id), []).append(int(number))
    return out


def assert_consistent(db: Database) -> None:
    """No attempt without its job, and every remaining job has its attempts 1..lease_token
    (the seeded jobs each ran lease_token times, with a row per attempt; a job that never
    ran has none)."""
    with db.read() as conn:
        tokens = {int(i): int(t) for i, t in conn.execute(
            select(jobs_t.c.id, jobs_t.c.lease_token))}
    by_job = attempts_by_job(db)
    orphans = set(by_job) - set(tokens)
    assert not orphans, f"attempts outlived their jobs: {sorted(orphans)[:10]}"
    for job_id, token in tokens.items():
        assert by_job.get(job_id, []) == list(range(1, token + 1)), job_id


@pytest.fixture(autouse=True)
def _no_lease_row(request: pytest.FixtureRequest) -> None:
    """tests/conftest.py truncates the other tables between PostgreSQL tests."""
    if "db" in request.fixturenames:
        database: Database = request.getfixturevalue("db")
        with database.write() as conn:
            conn.execute(leases_t.delete())


@pytest.fixture
def frozen() -> Iterator[float]:
    clock.set_clock(lambda: NOW)
    yield NOW
    clock.set_clock(None)


def default_policy(**per_type: dict[str, Any]) -> RetentionPolicy:
    settings = load_settings(database_url="sqlite:///x.db")
    return retention.policy_from_settings(settings, per_type or None)


# --- the rules ----------------------------------------------------------------------------


AGES = (1.0, 8.0, 100.0)


def test_the_right_rows_go_per_status_age_and_type(db: Database, frozen: float) -> None:
    rows: list[tuple[str, str, float | None, int]] = []
    for job_type in ("customer", "invoice"):
        for status in ("success", "canceled", "failed", "dead"):
            for age in AGES:
                rows.append((status, job_type, age, 2 if status != "canceled" else 0))
    # Unfinished jobs, even with a stale finished_at (as a retried job might have had):
    # never touched.
    rows += [("pending", "customer", 500.0, 1), ("running", "customer", 500.0, 2),
             ("pending", "invoice", None, 0), ("running", "invoice", None, 1)]
    seeded = seed(db, rows)
    # invoice: successes kept 1 hour only, dead ones forever.
    policy = default_policy(invoice={"success": "1h", "dead": "never"})
    keep_days = {"success": 7, "canceled": 7, "failed": 90, "dead": 90}

    def goes(s: Seeded) -> bool:
        if s.status in ("pending", "running") or s.age_days is None:
            return False
        if s.job_type == "invoice" and s.status == "success":
            return s.age_days > 1 / 24
        if s.job_type == "invoice" and s.status == "dead":
            return False
        return s.age_days > keep_days[s.status]

    expected_gone = {s.id for s in seeded if goes(s)}
    assert 0 < len(expected_gone) < len(seeded)
    before = attempts_by_job(db)
    counted = retention.count_prunable(db, policy)
    result = retention.prune(db, policy, owner="t")
    assert result.leader
    assert job_ids(db) == {s.id for s in seeded} - expected_gone
    assert result.counts.jobs == counted.jobs == len(expected_gone)
    expected_attempts = sum(len(before.get(i, [])) for i in expected_gone)
    assert result.counts.attempts == counted.attempts == expected_attempts > 0
    after = attempts_by_job(db)
    assert not set(after) & expected_gone  # attempts went with their jobs
    assert after == {i: n for i, n in before.items() if i not in expected_gone}
    assert_consistent(db)
    # A second run finds nothing more.
    assert retention.prune(db, policy, owner="t").counts.jobs == 0


def test_nothing_pending_or_running_is_touched_even_with_everything_expired(
        db: Database, frozen: float) -> None:
    seeded = seed(db, [("pending", "customer", 1000.0, 3), ("running", "customer", 1000.0, 2),
                       ("success", "customer", 1000.0, 1)])
    policy = RetentionPolicy(dict.fromkeys(retention.PRUNABLE, 1.0), {}, 1.0)
    # Even asked for by name (the CLI refuses it; the core ignores it).
    result = retention.prune(db, policy, owner="t",
                             statuses=["success", "pending", "running"])
    assert result.counts.jobs == 1
    assert job_ids(db) == {seeded[0].id, seeded[1].id}
    assert attempts_by_job(db) == {seeded[0].id: [1, 2, 3], seeded[1].id: [1, 2]}


def test_replay_lineage_is_kept(db: Database, frozen: float) -> None:
    rows: list[tuple[str, str, float | None, int]] = [
        ("dead", "customer", 200.0, 4),      # 0: original, its replay 1 is still pending
        ("pending", "customer", None, 0),    # 1
        ("dead", "customer", 200.0, 4),      # 2: original of a young replay
        ("success", "customer", 1.0, 1),     # 3
        ("dead", "customer", 200.0, 4),      # 4: chain 4 <- 5 <- 6, all old: all go
        ("failed", "customer", 150.0, 1),    # 5
        ("success", "customer", 30.0, 1),    # 6
        ("failed", "customer", 200.0, 1),    # 7: chain 7 <- 8 <- 9, 9 young: all stay
        ("dead", "customer", 200.0, 4),      # 8
        ("failed", "customer", 5.0, 1),      # 9
    ]
    seeded = seed(db, rows, replay_of={1: 0, 3: 2, 5: 4, 6: 5, 8: 7, 9: 8})
    policy = default_policy()
    counted = retention.count_prunable(db, policy)
    result = retention.prune(db, policy, owner="t")
    gone = {seeded[i].id for i in (4, 5, 6)}
    assert job_ids(db) == {s.id for s in seeded} - gone
    assert result.counts.jobs == counted.jobs == 3
    assert result.counts.attempts == counted.attempts == 6
    # The young replay ages past its retention: then it goes, and its original after it.
    later = NOW + 8 * DAY
    result = retention.prune(db, policy, owner="t", now=later)
    assert {seeded[2].id, seeded[3].id}.isdisjoint(job_ids(db))
    assert seeded[0].id in job_ids(db)  # its replay is still pending
    assert_consistent(db)


def test_audit_retention_and_never(db: Database, frozen: float) -> None:
    with db.write() as conn:
        for age in (1, 89, 91, 400):
            conn.execute(audit_t.insert().values(at=NOW - age * DAY, actor="op",
                                                 action="retry", job_id=1))
    seed(db, [("success", "customer", 3650.0, 1), ("dead", "customer", 3650.0, 2)])
    # Success kept forever: the audit default (the longest job retention) is forever too.
    settings = load_settings(database_url="sqlite:///x.db", retention_success="never")
    forever = retention.policy_from_settings(settings)
    assert forever.audit is None
    result = retention.prune(db, forever, owner="t")
    assert (result.counts.jobs, result.counts.audit) == (1, 0)
    with db.read() as conn:
        assert conn.execute(select(jobs_t.c.status)).scalars().all() == ["success"]
    # Defaults: audit kept 90 days (the longest job retention).
    policy = default_policy()
    assert policy.audit == 90 * DAY
    assert retention.count_prunable(db, policy).audit == 2
    assert retention.prune(db, policy, owner="t").counts.audit == 2
    with db.read() as conn:
        ages = sorted(round((NOW - a) / DAY) for a in conn.execute(select(audit_t.c.at))
                      .scalars())
    assert ages == [1, 89]
    # An explicit audit retention wins.
    explicit = retention.policy_from_settings(load_settings(
        database_url="sqlite:///x.db", retention_audit="30d"))
    assert retention.prune(db, explicit, owner="t").counts.audit == 1


def test_durations() -> None:
    p = retention.parse_duration
    assert (p("45s"), p("30m"), p("12h"), p("7d"), p("2w"), p("1.5d"), p("1y")) == (
        45, 1800, 43200, 7 * DAY, 14 * DAY, 1.5 * DAY, 365 * DAY)
    assert p("never") is None and p("0") is None and p("0d") is None and p("NEVER") is None
    for bad in ("7", "7x", "-1d", "", "d", "1e9d", "seven days", "101y"):
        with pytest.raises(ValueError, match="bad duration"):
            p(bad)
    with pytest.raises(ValueError, match="not one of"):
        retention.parse_per_type('{"invoice": {"pending": "1d"}}')


def test_batches_halve_when_slow_and_grow_slowly() -> None:
    sizer = BatchSizer(Tuning(target_seconds=0.1, start_batch=400, min_batch=10,
                              max_batch=1000))
    assert sizer.record(0.3) == pytest.approx(0.3)  # slow: pause as long as the batch
    assert sizer.size == 200
    sizer.record(0.08)  # within the target: unchanged
    assert sizer.size == 200
    sizer.record(0.01)
    assert sizer.size == 250  # fast: a quarter more, not double
    for _ in range(30):
        sizer.record(1.0)
    assert sizer.size == 10
    for _ in range(100):
        sizer.record(0.0)
    assert sizer.size == 1000


def test_batches_are_bounded_and_paused(db: Database, frozen: float) -> None:
    seed(db, [("success", "customer", 30.0, 1)] * 60)
    events: list[dict[str, Any]] = []

    class Log:
        def info(self, event: str, **kw: Any) -> None:
            events.append({"event": event, **kw})

    tuning = Tuning(target_seconds=10.0, start_batch=7, min_batch=1, max_batch=10,
                    min_pause=0.0)
    result = retention.prune(db, default_policy(), owner="t", tuning=tuning, log=Log())
    sizes = [e["jobs"] for e in events if e["event"] == "prune.batch"]
    assert sum(sizes) == 60 == result.counts.jobs
    assert max(sizes) <= 10 and sizes[0] == 7
    assert events[-1]["event"] == "prune.done" and events[-1]["jobs"] == 60


def test_kept_rows_between_prunable_ones_are_stepped_over(db: Database, frozen: float) -> None:
    """The pruner walks ix_sync_jobs_finished_at with a cursor: dead jobs (kept 90 days)
    interleaved with expired successes, some finishing at the same instant, in batches of
    at most 4: every success goes, every dead job stays."""
    rows = [("dead" if i % 3 == 0 else "success", "customer", 8.0 + (i // 2) * 0.5, 1)
            for i in range(60)]
    seeded = seed(db, rows)
    tuning = Tuning(target_seconds=10.0, start_batch=4, min_batch=1, max_batch=4,
                    min_pause=0.0)
    result = retention.prune(db, default_policy(), owner="t", tuning=tuning)
    successes = {s.id for s in seeded if s.status == "success"}
    assert result.counts.jobs == len(successes) == 40
    assert result.batches >= 10
    assert job_ids(db) == {s.id for s in seeded} - successes
    assert_consistent(db)


def test_the_candidates_walk_the_finished_at_index(db: Database, frozen: float) -> None:
    # Most jobs are recent (kept), a few are past their retention: the plan walks the old
    # end of the index rather than reading the table.
    seed(db, [("success", "customer", 1.0, 0)] * 3000
         + [("success", "customer", 30.0, 1), ("dead", "customer", 30.0, 1)] * 50)
    rule = default_policy().rules(NOW, ["success"])[0]
    stmt = retention._candidates(db, rule, 100, NOW - 40 * DAY)
    sql = str(stmt.compile(db.engine, compile_kwargs={"literal_binds": True}))
    with db.read() as conn:
        if db.is_postgres:
            conn.execute(text("ANALYZE sync_jobs"))
            plan = "\n".join(r[0] for r in conn.execute(text("EXPLAIN " + sql)))
        else:
            conn.execute(text("ANALYZE"))
            plan = "\n".join(r[-1] for r in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
    assert "ix_sync_jobs_finished_at" in plan, plan


# --- one pruner at a time ------------------------------------------------------------------


def test_a_second_pruner_is_refused_while_one_leads(db_url: str, db: Database,
                                                    frozen: float) -> None:
    seed(db, [("success", "customer", 30.0, 1)] * 3)
    other = Database(db_url)  # another engine, as another process would have
    try:
        with retention.leadership(db, "A") as lease:
            assert lease is not None and lease.renew()
            refused = retention.prune(other, default_policy(), owner="B")
            assert not refused.leader and refused.counts.jobs == 0
            assert len(job_ids(db)) == 3
        # Released: the next one leads.
        assert retention.prune(other, default_policy(), owner="B").counts.jobs == 3
    finally:
        other.dispose()


def _batches_done(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(leases_t.c.last_jobs)).scalar() or 0)


def test_racing_pruners_never_overlap(db_url: str, db: Database, frozen: float) -> None:
    """Four threads, each with its own engine, race for the lease over and over. Every batch
    logs which run made it: one run's batches are never interleaved with another's (nor,
    on PostgreSQL, in flight at once), and all the work gets done exactly once."""
    seed(db, [("success", "customer", 30.0, 1)] * 200)
    batches: list[str] = []
    active, peak, leaders = [0], [0], []
    guard = threading.Lock()

    def racer(name: str) -> None:
        own = Database(db_url)
        try:
            deadline, k = time.monotonic() + 60, 0
            while job_ids(own) and time.monotonic() < deadline:  # until all work is done
                k += 1
                run = f"{name}/{k}"
                enough = threading.Event()  # each run stops after two batches: the lead
                # then changes hands many times

                def inside(batch: int, run: str = run, enough: threading.Event = enough
                           ) -> None:
                    with guard:
                        batches.append(run)
                        active[0] += 1
                        peak[0] = max(peak[0], active[0])
                    time.sleep(0.002)  # widen the window another pruner would overlap in
                    with guard:
                        active[0] -= 1
                    if batch >= 2:
                        enough.set()

                r = retention.prune(own, default_policy(), owner=name, in_batch=inside,
                                    stop=enough,
                                    tuning=Tuning(start_batch=5, max_batch=5, min_pause=0.0,
                                                  pause_factor=0.0))
                if r.leader:
                    with guard:
                        leaders.append((run, r.counts.jobs))
        finally:
            own.dispose()

    threads = [threading.Thread(target=racer, args=(f"p{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert peak[0] == 1
    runs = [b for i, b in enumerate(batches) if i == 0 or batches[i - 1] != b]
    assert len(runs) == len(set(runs)), f"interleaved runs: {runs}"
    assert len({run for run, n in leaders if n}) > 1  # the lead changed hands
    assert sum(n for _, n in leaders) == 200
    assert job_ids(db) == set()


def test_lease_is_taken_over_once_expired_on_sqlite(db: Database) -> None:
    if db.is_postgres:
        pytest.skip("PostgreSQL's advisory lock ends with its session, not by expiry")
    clock.set_clock(lambda: NOW)
    with retention.leadership(db, "A", ttl=30) as a:
        assert a is not None
        with retention.leadership(db, "B", ttl=30) as b:
            assert b is None
        clock.set_clock(lambda: NOW + 31)  # A stalled past its lease
        assert not a.renew()
        with retention.leadership(db, "B", ttl=30) as b:
            assert b is not None and b.renew()


# --- a pruner killed mid-batch -------------------------------------------------------------

_KILLED = """
import sys, time
from core import clock, retention
from core import logging as sblog
from core.db import Database
sblog.configure(quiet=True)
clock.set_clock(lambda: {now})
db = Database(sys.argv[1])

def hold(batch):
    if batch == 3:  # deleted, not committed
        print("in-batch", flush=True)
        time.sleep(600)

retention.prune(db, retention.RetentionPolicy({{"success": 86400.0}}), owner="doomed",
                in_batch=hold, tuning=retention.Tuning(
                    start_batch=400, max_batch=400, target_seconds=1e6, min_pause=0.0,
                    pause_factor=0.0))
"""


def test_a_pruner_killed_mid_batch_leaves_consistent_tables(
        db_url: str, db: Database, frozen: float, tmp_path: Path) -> None:
    seeded = seed(db, [("success", "customer", 30.0, 3)] * 2000
                  + [("running", "customer", None, 1)] * 5)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    err = tmp_path / "stderr.txt"
    with err.open("w") as err_file:
        proc = subprocess.Popen([sys.executable, "-c", _KILLED.format(now=NOW), db_url],
                                stdout=subprocess.PIPE, stderr=err_file, text=True, env=env)
    try:
        assert proc.stdout is not None
        # One line, when the third batch has deleted its rows and not committed (or EOF if
        # the child died first: then its stderr says why).
        line = proc.stdout.readline()
        assert line.strip() == "in-batch", err.read_text()
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    # Two batches committed, the third rolled back: exactly 800 jobs and 2400 attempts gone.
    remaining = job_ids(db)
    assert len(remaining) == len(seeded) - 800
    assert sum(len(v) for v in attempts_by_job(db).values()) == 2000 * 3 + 5 - 2400
    assert_consistent(db)
    assert _batches_done(db) == 800  # the figures moved with the committed batches only
    # The next pruner finishes the job (on SQLite once the dead owner's lease expires).
    later = NOW + 61 if not db.is_postgres else NOW
    clock.set_clock(lambda: later)
    result = retention.prune(db, RetentionPolicy({"success": DAY}), owner="next")
    assert result.leader and result.counts.jobs == 1200
    assert len(job_ids(db)) == 5
    assert_consistent(db)


# --- the command line ----------------------------------------------------------------------


def _seed_mixed(db: Database) -> list[Seeded]:
    rows: list[tuple[str, str, float | None, int]] = []
    for i in range(40):
        rows.append((("success", "failed", "dead", "canceled")[i % 4], "customer",
                     (3.0, 10.0, 120.0)[i % 3], 1 + i % 4))
    rows += [("pending", "customer", None, 0), ("running", "customer", None, 1)]
    seeded = seed(db, rows, now=clock.now())
    with db.write() as conn:
        for age in (10, 100, 200):
            conn.execute(audit_t.insert().values(at=clock.now() - age * DAY, actor="op",
                                                 action="cancel", job_id=seeded[0].id))
    return seeded


def test_dry_run_counts_exactly_what_prune_deletes(db_url: str, db: Database,
                                                   cli: CliRun) -> None:  # noqa: F811
    seeded = _seed_mixed(db)
    before_jobs, before_attempts = job_ids(db), attempts_by_job(db)
    dry = cli("prune", "--dry-run", "--json", db=db_url)
    assert dry.returncode == 0, dry.stderr
    counted = json.loads(dry.stdout)
    assert job_ids(db) == before_jobs and attempts_by_job(db) == before_attempts
    text_dry = cli("prune", "--dry-run", db=db_url)
    assert text_dry.stdout.startswith(f"would prune {counted['jobs']} jobs")
    done = cli("prune", "--json", db=db_url)
    assert done.returncode == 0, done.stderr
    pruned = json.loads(done.stdout)
    gone = before_jobs - job_ids(db)
    assert counted["jobs"] == pruned["jobs"] == len(gone) > 0
    assert counted["attempts"] == pruned["attempts"] == sum(
        len(before_attempts.get(i, [])) for i in gone) > 0
    assert counted["by_status"] == pruned["by_status"]
    assert counted["audit_events"] == pruned["audit_events"] == 2
    assert {s.id for s in seeded if s.status in ("pending", "running")} <= job_ids(db)
    # Now nothing is left to prune, and dry-run says so.
    assert json.loads(cli("prune", "--dry-run", "--json", db=db_url).stdout)["jobs"] == 0


def test_archive_holds_exactly_what_was_deleted(db_url: str, db: Database, cli: CliRun,  # noqa: F811
                                                tmp_path: Path) -> None:
    _seed_mixed(db)
    before_jobs, before_attempts = job_ids(db), attempts_by_job(db)
    archive = tmp_path / "old.jsonl"
    done = cli("prune", "--older-than", "5d", "--status", "success", "--status", "dead",
               "--status", "audit", "--archive", str(archive), db=db_url)
    assert done.returncode == 0, done.stderr
    gone = before_jobs - job_ids(db)
    lines = [json.loads(line) for line in archive.read_text().splitlines()]
    jobs = [line["job"] for line in lines if line["kind"] == "job"]
    assert {j["id"] for j in jobs} == gone and len(jobs) == len(gone) > 0
    assert {j["status"] for j in jobs} == {"success", "dead"}
    for j in jobs:
        assert [a["number"] for a in j["attempts"]] == before_attempts.get(j["id"], [])
        assert j["payload"] == {"i": j["id"] - min(before_jobs)}
    events = [line["audit_event"] for line in lines if line["kind"] == "audit_event"]
    assert len(events) == 3  # all three are older than 5 days
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(audit_t)).scalar() == 0
    assert done.stdout.startswith(f"pruned {len(gone)} jobs")


def test_bad_input_is_one_line_and_exit_2(db_url: str, cli: CliRun,  # noqa: F811
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    assert_one_line_error(cli("prune", "--older-than", "7x", db=db_url), 2, "bad duration")
    assert_one_line_error(cli("prune", "--status", "pending", db=db_url), 2, "invalid choice")
    assert_one_line_error(cli("prune", "--dry-run", "--archive", "x.jsonl", db=db_url), 2,
                          "--dry-run")
    monkeypatch.setenv("SYNCBRIDGE_RETENTION_DEAD", "soon")
    assert_one_line_error(cli("prune", db=db_url), 2, "SYNCBRIDGE_RETENTION_DEAD")
    monkeypatch.delenv("SYNCBRIDGE_RETENTION_DEAD")
    monkeypatch.setenv("SYNCBRIDGE_RETENTION_PER_TYPE", '{"invoice": {"success": "1x"}}')
    assert_one_line_error(cli("prune", db=db_url), 2, "SYNCBRIDGE_RETENTION_PER_TYPE")


def test_metrics_show_the_last_run_and_totals(db_url: str, db: Database, frozen: float,
                                              cli: CliRun) -> None:  # noqa: F811
    assert metrics.collect(db).retention.last_run_at is None
    seed(db, [("success", "customer", 30.0, 2)] * 3)
    retention.prune(db, default_policy(), owner="t")
    seed(db, [("dead", "customer", 300.0, 4)] * 2)
    retention.prune(db, default_policy(), owner="t")
    r = metrics.collect(db).retention
    assert (r.last_run_at, r.last_jobs, r.last_attempts) == (NOW, 2, 8)
    assert (r.total_jobs, r.total_attempts) == (5, 14)
    doc = metrics.collect(db).to_dict()["retention"]
    assert doc["total_pruned"] == {"jobs": 5, "attempts": 14, "audit_events": 0}
    out = cli("metrics", db=db_url).stdout.strip().splitlines()[-1]
    assert out.startswith("retention: last prune") and "total 5 jobs, 14 attempts" in out


# --- inside a worker -----------------------------------------------------------------------


def test_a_worker_prunes_old_finished_jobs_on_its_own(db: Database, settings: Settings) -> None:
    from core.handlers import Registry
    from core.worker import Worker

    old = seed(db, [("success", "customer", 30.0, 1)] * 25 + [("dead", "customer", 5.0, 4)],
               now=clock.now())
    fast = settings.model_copy(update={"prune_interval_seconds": 0.05})

    async def go() -> None:
        worker = Worker(db, fast, registry=Registry())
        task = asyncio.create_task(worker.run())
        try:
            await async_wait_for(lambda: job_ids(db) == {old[-1].id}, timeout=20,
                                 message="the worker's pruner to delete the old successes")
        finally:
            worker.request_stop()
            await asyncio.wait_for(task, 20)

    asyncio.run(go())
    with db.read() as conn:
        stats = retention.read_stats(conn)
    assert stats.total_jobs == 25 and stats.owner is None  # released at shutdown


def test_prune_interval_zero_turns_it_off(db: Database, settings: Settings) -> None:
    from core.handlers import Registry
    from core.worker import Worker

    seed(db, [("success", "customer", 30.0, 1)] * 3, now=clock.now())
    off = settings.model_copy(update={"prune_interval_seconds": 0.0})

    async def go() -> None:
        worker = Worker(db, off, registry=Registry())
        task = asyncio.create_task(worker.run())
        # Observable: the worker ran its claim loop (heartbeat written) for a while that
        # would have held several prune intervals of the test above.
        await async_wait_for(lambda: worker.state == "running", timeout=10)
        assert not any(t.get_coro().__name__ == "prune_in_worker"  # type: ignore[union-attr]
                       for t in asyncio.all_tasks())
        worker.request_stop()
        await asyncio.wait_for(task, 20)

    asyncio.run(go())
    assert len(job_ids(db)) == 3


# --- migration 0009 ------------------------------------------------------------------------


def test_0009_up_and_down(empty_db: Database) -> None:  # noqa: F811
    db = empty_db
    _migrate(db, "upgrade", "0006")
    if not db.is_postgres:
        with db.read() as conn:
            assert conn.exec_driver_sql("PRAGMA auto_vacuum").scalar() == 0
    _migrate(db, "upgrade", "0009")
    insp = inspect(db.engine)
    assert "sync_leader_leases" in insp.get_table_names()
    assert "ix_sync_jobs_status_finished" in {i["name"] for i in insp.get_indexes("sync_jobs")}
    _migrate(db, "upgrade", "head")
    assert current_revision(db) == head_revision()
    # 0010: the pruner walks ix_sync_jobs_finished_at; the (status, finished_at) index,
    # an entry on every completion, is gone.
    assert "ix_sync_jobs_status_finished" not in {
        i["name"] for i in inspect(db.engine).get_indexes("sync_jobs")}
    assert "ix_audit_at" in {i["name"] for i in insp.get_indexes("sync_audit_events")}
    with db.read() as conn:
        if db.is_postgres:
            options = conn.execute(text("SELECT reloptions FROM pg_class WHERE relname = "
                                        "'sync_jobs'")).scalar()
            assert "fillfactor=85" in options and "autovacuum_vacuum_scale_factor=0.02" in options
        else:
            assert conn.exec_driver_sql("PRAGMA auto_vacuum").scalar() == 2  # incremental
    seed(db, [("success", "customer", 30.0, 2)] * 3)
    assert retention.prune(db, RetentionPolicy({"success": DAY}), owner="t",
                           now=NOW).counts.jobs == 3
    _migrate(db, "downgrade", "0006")
    insp = inspect(db.engine)
    assert "sync_leader_leases" not in insp.get_table_names()
    assert "ix_sync_jobs_status_finished" not in {i["name"] for i in insp.get_indexes(
        "sync_jobs")}
    if db.is_postgres:
        with db.read() as conn:
            assert conn.execute(text("SELECT reloptions FROM pg_class WHERE relname = "
                                     "'sync_jobs'")).scalar() is None


def test_sqlite_gives_space_back(tmp_path: Path, frozen: float) -> None:
    from core.migrations import upgrade

    db = Database(f"sqlite:///{tmp_path}/space.db")
    upgrade(db)
    try:
        seed(db, [("success", "customer", 30.0, 3)] * 3000)
        path = tmp_path / "space.db"

        def size() -> tuple[int, int, int]:
            raw = db.engine.raw_connection()  # autocommit: a checkpoint needs no transaction
            try:
                raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                pages = raw.execute("PRAGMA page_count").fetchone()[0]
                free = raw.execute("PRAGMA freelist_count").fetchone()[0]
            finally:
                raw.close()
            return pages, free, path.stat().st_size

        pages_before, _, bytes_before = size()
        retention.prune(db, RetentionPolicy({"success": DAY}), owner="t")
        pages_after, free, bytes_after = size()
        assert pages_after < pages_before / 2, (pages_before, pages_after)
        assert bytes_after < bytes_before / 2, (bytes_before, bytes_after)
        assert free == 0
    finally:
        db.dispose()
