"""Shared plumbing: fresh databases, worker processes driven over stdin, timing."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PG_ADMIN_DSN = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parent.parent


class Skip(Exception):
    """A system cannot run here (its package is not installed); the table says why."""


def installed(*modules: str) -> str:
    """The version of a peer's package (the first module), or Skip when any of its modules
    is missing."""
    try:
        loaded = [importlib.import_module(m) for m in modules]
    except ImportError as exc:
        raise Skip(f"not installed ({exc.name}); pip install -e '.[bench]'") from None
    return str(loaded[0].__version__)


def pg_empty_probe(dsn: str, sql: str) -> tuple[Callable[[], bool], Callable[[], None]]:
    """A done-check on a peer's own table: `sql` is an EXISTS over the unfinished jobs."""
    import psycopg

    conn = psycopg.connect(dsn, autocommit=True)
    return (lambda: not conn.execute(sql).fetchone()[0], conn.close)


def pg_count(dsn: str, sql: str, *params: Any) -> int:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return int(conn.execute(sql, params).fetchone()[0])


def pg_dsn(dbname: str) -> str:
    return f"{PG_ADMIN_DSN.rsplit('/', 1)[0]}/{dbname}"


@contextlib.contextmanager
def fresh_pg(prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database (libpq DSN), dropped afterwards."""
    import psycopg

    name = f"bench_{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg_dsn(name)
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def fresh_sqlite(tmp: Path, prefix: str) -> Iterator[Path]:
    path = tmp / f"bench_{prefix}_{uuid.uuid4().hex[:8]}.db"
    try:
        yield path
    finally:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{path}{suffix}")


# --- worker processes ---------------------------------------------------------------------
#
# The parent starts each worker as `python -m bench.common module:function '<json>'`. The
# child sets itself up (imports, connections, schema checks), prints "ready", waits for "go"
# on stdin, works until "stop", then prints one JSON line with what it wants to report.
# Start-up cost is therefore outside the timed window, for every system alike.

Target = Callable[[dict[str, Any], "Control"], Awaitable[dict[str, Any] | None]]


@dataclass
class Control:
    go: asyncio.Event
    stop: asyncio.Event

    def ready(self) -> None:
        print("ready", flush=True)


async def _child_main(target: Target, cfg: dict[str, Any]) -> dict[str, Any] | None:
    loop = asyncio.get_running_loop()
    ctl = Control(asyncio.Event(), asyncio.Event())

    def reader() -> None:
        with contextlib.suppress(ValueError, OSError, RuntimeError):  # stdin or loop closed
            for line in sys.stdin:
                cmd = line.strip()
                if cmd == "go":
                    loop.call_soon_threadsafe(ctl.go.set)
                elif cmd == "stop":
                    break
            loop.call_soon_threadsafe(ctl.stop.set)
            loop.call_soon_threadsafe(ctl.go.set)

    threading.Thread(target=reader, daemon=True).start()
    return await target(cfg, ctl)


def child(argv: list[str]) -> None:
    mod, _, fn = argv[0].partition(":")
    target = getattr(importlib.import_module(mod), fn)
    cfg = json.loads(argv[1])
    result = asyncio.run(_child_main(target, cfg))
    print("result " + json.dumps(result or {}), flush=True)


@dataclass
class Workers:
    """K worker processes of one system, started, released together and stopped."""

    target: str
    cfgs: list[dict[str, Any]]
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)

    def __enter__(self) -> Workers:
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        for cfg in self.cfgs:
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "bench.common", self.target, json.dumps(cfg)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT,
            ))
        for p in self.procs:
            line = self._line(p, "ready")
            if line is None:
                self.kill()
                raise RuntimeError(f"{self.target} worker did not start (exit {p.poll()})")
        return self

    @staticmethod
    def _line(p: subprocess.Popen[str], prefix: str) -> str | None:
        assert p.stdout is not None
        for line in p.stdout:
            if line.startswith(prefix):
                return line
        return None

    def go(self) -> float:
        t0 = time.perf_counter()
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        return t0

    def stop(self, timeout: float = 60.0) -> list[dict[str, Any]]:
        for p in self.procs:
            assert p.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                p.stdin.write("stop\n")
                p.stdin.flush()
                p.stdin.close()
        for p in self.procs:
            line = self._line(p, "result ")
            self.results.append(json.loads(line[7:]) if line else {})
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return self.results

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def wait_until(done: Callable[[], bool], timeout: float, interval: float = 0.005) -> float:
    """Poll `done` (a read of the system's own tables) until true; returns perf_counter()."""
    deadline = time.perf_counter() + timeout
    while True:
        if done():
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise TimeoutError("the workload did not finish in time")
        time.sleep(interval)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


if __name__ == "__main__":
    child(sys.argv[1:])


def comma_list(raw: str, known: Collection[str], what: str) -> list[str]:
    """A comma-separated choice from the command line; an unknown item is one line on
    stderr and exit status 2 (argparse's own for bad arguments)."""
    items = [x for x in raw.split(",") if x]
    bad = [x for x in items if x not in known]
    if bad:
        print(f"unknown {what}: {', '.join(bad)} (known: {', '.join(known)})", file=sys.stderr)
        raise SystemExit(2)
    return items
