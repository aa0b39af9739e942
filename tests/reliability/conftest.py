"""Fixtures for the reliability tests: bounded subprocesses, one mock upstream over loopback
HTTP for the session, the transition log, and the figures every scenario publishes."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.db import Database
from tests.reliability import _support as s

FIGURES: dict[str, dict[str, Any]] = {}


def summary_path() -> Path:
    default = Path(tempfile.gettempdir()) / "syncbridge-reliability.json"
    return Path(os.environ.get("SYNCBRIDGE_RELIABILITY_SUMMARY", default))


def backend(db_url: str) -> str:
    return "sqlite" if db_url.startswith("sqlite") else "postgresql"


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Any:
    """record(**figures): publish a scenario's figures (keyed by test id)."""

    def _record(**figures: Any) -> None:
        key = request.node.nodeid.split("::", 1)[-1]
        FIGURES.setdefault(key, {}).update(figures)
        print(f"\nFIGURES {key}: {json.dumps(FIGURES[key], sort_keys=True)}")

    return _record


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[s.Procs]:
    group = s.Procs(tmp_path)
    try:
        yield group
    finally:
        group.kill_all()


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`syncbridge mock-upstream` on a free loopback port, for the whole session."""
    group = s.Procs(tmp_path_factory.mktemp("mock"))
    try:
        yield s.start_mock(group)
    finally:
        group.kill_all()


@pytest.fixture
def transition_log(db: Database) -> Iterator[Database]:
    s.install_transition_log(db)
    try:
        yield db
    finally:
        s.remove_transition_log(db)


RUN: dict[str, Any] = {"started": time.time(), "outcomes": {}}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count what the run observed (passed, failed, skipped), for the summary's `_run`."""
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        outcomes = RUN["outcomes"]
        outcomes[report.outcome] = outcomes.get(report.outcome, 0) + 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not FIGURES:
        return
    path = summary_path()
    previous: dict[str, Any] = {}
    if path.exists():
        try:
            previous = json.loads(path.read_text())
        except ValueError:
            previous = {}
    previous.update(FIGURES)
    previous["_run"] = {"date": time.strftime("%Y-%m-%d", time.gmtime(RUN["started"])),
                        "seconds": round(time.time() - RUN["started"]),
                        "outcomes": dict(RUN["outcomes"]), "cpus": os.cpu_count(),
                        "load_average_1m": round(os.getloadavg()[0], 1)}
    path.write_text(json.dumps(previous, indent=2, sort_keys=True))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("reliability figures")
    for key, figures in sorted(FIGURES.items()):
        terminalreporter.write_line(f"{key}: {json.dumps(figures, sort_keys=True)}")
    terminalreporter.write_line(f"(written to {summary_path()})")
