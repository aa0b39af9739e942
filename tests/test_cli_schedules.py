"""`syncbridge enqueue --in/--at` and `syncbridge schedules`, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

import core.demo
from core import clock, reads, schedules
from core.db import Database
from tests.test_cli import assert_one_line_error, cli, url  # noqa: F401 - fixtures

Cli = Callable[..., subprocess.CompletedProcess[str]]
T0 = datetime(2026, 12, 2, 9, 0, 0, tzinfo=UTC).timestamp()


def test_enqueue_in_and_at_wait_pending_with_their_next_run(cli: Cli, url: str,  # noqa: F811
                                                           db: Database) -> None:
    clock.set_clock(lambda: T0)
    later = cli("enqueue", "customer", "c_1", "--in", "10m", db=url)
    assert later.returncode == 0, later.stderr
    job = json.loads(later.stdout)
    assert job["status"] == "pending" and job["next_run_at"] == clock.iso(T0 + 600)
    at = cli("enqueue", "customer", "c_2", "--at", "2026-12-02T11:00:00+01:00", db=url)
    assert json.loads(at.stdout)["next_run_at"] == clock.iso(T0 + 3600)
    listing = cli("jobs", db=url).stdout
    assert "in 10m" in listing and "in 1h" in listing
    shown = cli("show", str(job["id"]), db=url).stdout
    assert f"next run in 10m00s ({clock.iso(T0 + 600)})" in shown


@pytest.mark.parametrize(("args", "fragment"), [
    (["--in", "10x"], "bad duration '10x'"),
    (["--in", "0s"], "more than zero"),
    (["--at", "2026-12-01T00:00:00Z"], "is in the past"),
    (["--at", "2026-12-03T00:00:00"], "give a zone"),
    (["--at", "next tuesday"], "bad time"),
    (["--in", "5m", "--at", "2026-12-03T00:00:00Z"], "not allowed with"),
])
def test_bad_times_are_one_line_exit_2(args: list[str], fragment: str, url: str,  # noqa: F811
                                       cli: Cli) -> None:  # noqa: F811
    proc = cli("enqueue", "customer", "c_1", *args, db=url)
    assert_one_line_error(proc, 2, fragment)
    assert "Traceback" not in proc.stderr


def test_schedules_lists_next_slot_and_last_job(cli: Cli, url: str, db: Database,  # noqa: F811
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    reg = core.demo.registry.copy()
    hourly = reg.recurring("hourly-customers", "customer", every="1h", entity_id="c_1001")
    reg.recurring("five-minutes", "invoice", cron="*/5 * * * *")
    monkeypatch.setattr(core.demo, "registry", reg)  # the app when none is named
    clock.set_clock(lambda: T0 + 60)
    empty = json.loads(cli("schedules", "--json", db=url).stdout)
    assert [(s["name"], s["last_slot"], s["next_slot"]) for s in empty] == [
        ("five-minutes", None, clock.iso(T0 + 300)),
        ("hourly-customers", None, clock.iso(T0 + 3600))]
    [slot] = schedules.tick(db, [hourly], max_attempts=4)
    data = json.loads(cli("schedules", "--json", db=url).stdout)
    assert data[1] == {"name": "hourly-customers", "job_type": "customer",
                       "spec": "every 1h", "entity_id": "c_1001",
                       "next_slot": clock.iso(T0 + 3600), "last_slot": clock.iso(T0),
                       "last_job_id": slot.job_id, "last_job_status": "pending",
                       "skipped": False}
    clock.set_clock(lambda: T0 + 3600)
    schedules.tick(db, [hourly], max_attempts=4)  # job still pending: skipped
    text = cli("schedules", db=url).stdout
    assert "cron */5 * * * *" in text and "every 1h" in text
    assert "skipped (previous job still active)" in text
    job = reads.get_job(db, slot.job_id or 0)
    assert job is not None and job.entity_id == "c_1001"


def test_schedules_without_any(cli: Cli, url: str) -> None:  # noqa: F811
    proc = cli("schedules", db=url)
    assert proc.returncode == 0 and "no recurring schedules" in proc.stdout
