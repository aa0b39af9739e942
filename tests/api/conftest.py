"""A real `syncbridge serve` process per test, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from core.db import Database
from core.migrations import upgrade

ROOT = Path(__file__).resolve().parents[2]
PG_PASSWORD = "hunter2-not-shown"  # trust auth ignores it; it must never be shown
WRITE_SECRET = "w" * 24
READ_SECRET = "r" * 24
TOKENS = f"ops:write:{WRITE_SECRET},dash:read:{READ_SECRET}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_for(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCBRIDGE_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update({f"SYNCBRIDGE_{k.upper()}": v for k, v in settings.items()})
    return env


def with_password(url: str) -> str:
    if url.startswith("postgresql") and "@" in url:
        scheme, rest = url.split("://", 1)
        user, host = rest.split("@", 1)
        return f"{scheme}://{user}:{PG_PASSWORD}@{host}"
    return url


@dataclass
class Server:
    url: str
    db_url: str
    proc: subprocess.Popen[str]
    client: httpx.Client
    stderr: list[str] = field(default_factory=list)

    def stop(self) -> str:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        out = self.proc.stderr.read() if self.proc.stderr else ""
        return out


def start_server(db_url: str, *, token: str | None = None, **settings: str) -> Server:
    timeout = 20.0
    port = free_port()
    settings.setdefault("api_metrics_refresh_seconds", "0.1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncbridge_tui", "serve", "--port", str(port),
         "--db", with_password(db_url)],
        env=env_for(**settings), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    client = httpx.Client(base_url=url, headers=headers, timeout=10)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited {proc.returncode}: {proc.stderr.read()}"  # type: ignore[union-attr]
                                 )
        try:
            if client.get("/healthz").status_code == 200:
                return Server(url, db_url, proc, client)
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"serve did not answer /healthz within {timeout}s")
        time.sleep(0.05)


@pytest.fixture
def server_factory(db_url: str) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def make(**kwargs: str) -> Server:
        s = start_server(db_url, **kwargs)
        started.append(s)
        return s

    yield make
    for s in started:
        stderr = s.stop()
        assert PG_PASSWORD not in stderr


@pytest.fixture
def server(server_factory: Callable[..., Server]) -> Server:
    return server_factory()


@pytest.fixture
def api_db(db_url: str) -> Iterator[Database]:
    db = Database(db_url)
    upgrade(db)
    yield db
    db.dispose()
