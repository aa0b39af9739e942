"""Prompt wake-ups for idle workers: LISTEN/NOTIFY on PostgreSQL, in-process otherwise."""

from __future__ import annotations

import threading
from collections.abc import Callable

import psycopg

from core.db import NOTIFY_CHANNEL, Database


def _libpq_dsn(db: Database) -> str:
    url = db.engine.url.set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class PgListener:
    """A daemon thread holding one autocommit connection that LISTENs for new work.

    It reconnects after a database restart; while disconnected the worker's poll still
    finds work, so a lost listener only costs latency.
    """

    def __init__(self, db: Database, on_notify: Callable[[], None]) -> None:
        self._dsn = _libpq_dsn(db)
        self._on_notify = on_notify
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="syncbridge-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self._on_notify()  # anything enqueued while we were away
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=0.5, stop_after=1):
                            self._on_notify()
            except psycopg.Error:
                self._stop.wait(1.0)
