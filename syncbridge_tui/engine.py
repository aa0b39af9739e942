"""The embedded worker as the console sees it, plus the log buffer its log pane reads.

The worker is core's `Worker`, run on its own asyncio loop in a Textual thread worker, so
a handler awaiting an upstream never competes with the UI's event loop, and the UI never
waits on the worker: it only reads its (thread-safe) state and asks it to pause, resume,
cancel one job or stop.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import deque
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from core.config import Settings
from core.db import Database
from core.worker import Worker


@dataclass(frozen=True, slots=True)
class LogLine:
    seq: int
    event: dict[str, Any]

    @property
    def correlation_id(self) -> str | None:
        value = self.event.get("correlation_id")
        return str(value) if value is not None else None


class LogBuffer:
    """A bounded, thread-safe ring of log events: the worker's threads write, the UI reads."""

    def __init__(self, maxlen: int = 5000) -> None:
        self._lines: deque[LogLine] = deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self._seq = itertools.count(1)

    def __call__(self, event: MutableMapping[str, Any]) -> None:
        with self._lock:
            self._lines.append(LogLine(next(self._seq), dict(event)))

    def since(self, seq: int) -> list[LogLine]:
        with self._lock:
            return [line for line in self._lines if line.seq > seq]


class EmbeddedWorker:
    """Owns one core Worker and the thread its loop runs in."""

    def __init__(self, db: Database, settings: Settings, *, concurrency: int | None = None,
                 **worker_kwargs: Any) -> None:
        self.worker = Worker(db, settings, concurrency=concurrency, **worker_kwargs)
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.started = False

    @property
    def concurrency(self) -> int:
        return self.worker.concurrency

    @property
    def state(self) -> str:
        if not self.started:
            return "off"
        if self.done.is_set():
            return "stopped"
        return self.worker.state

    def run_blocking(self) -> None:
        """The body of the thread worker: the worker's own event loop, until it stops."""
        self.started = True
        try:
            asyncio.run(self.worker.run())
        except BaseException as exc:  # surfaced in the header; the console keeps running
            self.error = exc
        finally:
            self.done.set()

    def toggle_pause(self) -> str:
        if self.worker.state == "paused":
            self.worker.resume()
            return "running"
        self.worker.pause()
        return "paused"

    def cancel_local(self, job_id: int) -> None:
        self.worker.cancel_local(job_id)

    def throughput(self) -> float:
        return self.worker.throughput()

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the worker to finish in-flight work (or release it) and wait until its loop
        has returned; True when it has. Safe to call more than once, or never started."""
        self.worker.request_stop()
        if not self.started:
            return True
        return self.done.wait(timeout)
