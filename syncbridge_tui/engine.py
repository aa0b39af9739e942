"""The embedded worker as the console sees it, plus the log buffer its log pane reads.

The worker is core's `Worker`, run in a child process (syncbridge_tui.worker_process says
why: the GIL), supervised from here. `EmbeddedWorker.run_blocking` (a Textual thread
worker in the console) starts the child and reads what it sends until it exits: its
state, its jobs/s, and its structlog events in batches, which go into the console's
LogBuffer. The UI never waits on the child: it reads the last values received and sends
one-line commands (pause, resume, cancel one job, wake, stop).

The child never outlives the console: closing the console ends the command pipe, and the
child then stops gracefully (finishes in-flight work, releases the rest) and exits.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from core.config import Settings
from core.db import Database, local_wakeup
from core.integrations.mock import MockUpstream
from syncbridge_tui.worker_process import WorkerSpec, child_main


@dataclass(frozen=True, slots=True)
class LogLine:
    seq: int
    event: dict[str, Any]

    @property
    def correlation_id(self) -> str | None:
        value = self.event.get("correlation_id")
        return str(value) if value is not None else None


class LogBuffer:
    """A bounded, thread-safe ring of log events: the worker's events are written by the
    thread that reads the child's pipe (and the console's own by structlog), the UI reads."""

    def __init__(self, maxlen: int = 5000) -> None:
        self._lines: deque[LogLine] = deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self._seq = itertools.count(1)

    def __call__(self, event: MutableMapping[str, Any]) -> None:
        with self._lock:
            self._lines.append(LogLine(next(self._seq), dict(event)))

    def extend(self, events: Iterable[dict[str, Any]]) -> None:
        with self._lock:
            self._lines.extend(LogLine(next(self._seq), e) for e in events)

    def since(self, seq: int) -> list[LogLine]:
        with self._lock:
            return [line for line in self._lines if line.seq > seq]


def _rebuild_mock(cls: type[MockUpstream], state: dict[str, Any]) -> MockUpstream:
    mock = cls.__new__(cls)
    mock.__dict__.update(state)
    mock._lock = threading.Lock()
    return mock


def _reduce_mock(mock: MockUpstream) -> tuple[Any, ...]:
    """A mock upstream crosses to the child as its settings and counters (its lock stays)."""
    state = {k: v for k, v in vars(mock).items() if k != "_lock"}
    return _rebuild_mock, (type(mock), state)


_tracker_lock = threading.Lock()


def _start_resource_tracker() -> None:
    """multiprocessing's spawn starts a resource-tracker process first, handing it
    sys.stderr's descriptor; under Textual sys.stderr is a capture object with none, and the
    terminal belongs to the console anyway: the tracker gets /dev/null. It is a small helper
    process of multiprocessing's own, which exits when the console does."""
    from multiprocessing import resource_tracker

    with _tracker_lock, open(os.devnull, "w") as devnull:
        saved, sys.stderr = sys.stderr, devnull
        try:
            resource_tracker.ensure_running()
        finally:
            sys.stderr = saved


class EmbeddedWorker:
    """Supervises the worker's child process; its methods are safe from any thread."""

    def __init__(self, db: Database, settings: Settings, *, concurrency: int | None = None,
                 log_sink: Callable[[list[dict[str, Any]]], None] | None = None,
                 **worker_kwargs: Any) -> None:
        self.spec = WorkerSpec(settings, db.url, concurrency or settings.concurrency,
                               dict(worker_kwargs))
        self.log_sink = log_sink
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.started = False
        self.pid: int | None = None  # the child's
        self.textual_in_child: bool | None = None  # the child reports it (a test checks)
        self.processed = 0  # jobs the child finished, as of its last tick
        self.in_flight = 0
        self._state = "starting"
        self._rate = 0.0
        self._paused = bool(worker_kwargs.get("start_paused", False))
        self._stop_requested = False
        self._force = False
        self._commands: Connection | None = None  # the parent's end of parent -> child
        self._send_lock = threading.Lock()
        self._process: BaseProcess | None = None

    @property
    def concurrency(self) -> int:
        return self.spec.concurrency

    @property
    def state(self) -> str:
        """off (never started), starting, running, paused, stopping, stopped."""
        if not self.started:
            return "off"
        if self.done.is_set():
            return "stopped"
        if self._state in ("running", "paused"):
            # The console's own wish is the truth: the child's next tick may predate it.
            return "paused" if self._paused else "running"
        return self._state

    def throughput(self) -> float:
        """Jobs/s the child reported (its core Worker.throughput, over 5 s)."""
        return 0.0 if self.done.is_set() else self._rate

    # --- commands --------------------------------------------------------------------------------

    def _send(self, *message: Any) -> bool:
        with self._send_lock:
            conn = self._commands
            if conn is None:
                return False
            try:
                conn.send(message)
            except (OSError, ValueError):
                return False  # the child is gone; the reader thread finds out
            return True

    def toggle_pause(self) -> str:
        self._paused = not self._paused
        self._send("pause" if self._paused else "resume")
        return "paused" if self._paused else "running"

    def cancel_local(self, job_id: int) -> None:
        """Stop a job the child runs right away (after the console canceled it)."""
        self._send("cancel", job_id)

    def wake(self) -> None:
        """The console wrote a job the worker may claim now (core.db's local wake-up, which
        does not cross processes on SQLite): tell the child. One small message per write
        transaction of the console's; the child's claim waits for the commit (the file's
        write lock), so it finds the job."""
        self._send("wake")

    def request_stop(self, *, force: bool = False) -> None:
        """Stop claiming, finish in-flight work within the shutdown timeout (or release it at
        once with force), then exit. Safe to call more than once, or before the start."""
        self._stop_requested = True
        self._force = self._force or force
        if self._state not in ("stopped",):
            self._state = "stopping" if self.started else self._state
        self._send("stop", self._force)

    # --- the supervisor thread -------------------------------------------------------------------

    def run_blocking(self) -> None:
        """Start the child and read its messages until it has exited (a thread's body)."""
        self.started = True
        try:
            self._supervise()
        except BaseException as exc:  # shown in the header and a toast; the console runs on
            self.error = exc
        finally:
            self._state = "stopped"
            self._rate = 0.0
            self.done.set()

    def _supervise(self) -> None:
        from multiprocessing.reduction import ForkingPickler

        for value in self.spec.worker_kwargs.values():
            if isinstance(value, MockUpstream):
                ForkingPickler.register(type(value), _reduce_mock)
        _start_resource_tracker()
        ctx = multiprocessing.get_context("spawn")
        cmd_read, cmd_write = ctx.Pipe(duplex=False)
        evt_read, evt_write = ctx.Pipe(duplex=False)
        process = ctx.Process(target=child_main, args=(cmd_read, evt_write, self.spec),
                              name="syncbridge-worker", daemon=True)
        try:
            process.start()
        except BaseException:
            cmd_write.close()
            evt_read.close()
            raise
        finally:
            # Our copies of the child's ends: closed, so its exit reads as end of file here.
            cmd_read.close()
            evt_write.close()
        self._process = process
        self.pid = process.pid
        with self._send_lock:
            self._commands = cmd_write
        if self._paused:
            self._send("pause")
        if self._stop_requested:
            self._send("stop", self._force)
        unsubscribe = local_wakeup.subscribe(self.wake)
        try:
            self._read(evt_read)
        finally:
            unsubscribe()
            evt_read.close()
            process.join(5.0)
            if process.is_alive():  # it stopped talking but did not exit: end it
                process.kill()
                process.join(5.0)
            with self._send_lock:
                self._commands = None
                cmd_write.close()
            if self.error is None and process.exitcode not in (0, None):
                self.error = RuntimeError(f"worker process exited with code {process.exitcode}")

    def _read(self, conn: Connection) -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return  # the child exited (or died)
            kind = message[0]
            if kind == "tick":
                self._status(message[1])
                if message[2] and self.log_sink is not None:
                    self.log_sink(message[2])
            elif kind == "hello":
                self.textual_in_child = bool(message[1].get("textual_loaded"))
            elif kind == "error":
                self.error = RuntimeError(str(message[1]))
            elif kind == "stopped":
                self._status(message[1])
                self._state = "stopped"

    def _status(self, status: dict[str, Any]) -> None:
        self._rate = float(status.get("rate", 0.0))
        self.processed = int(status.get("processed", 0))
        self.in_flight = int(status.get("in_flight", 0))
        state = str(status.get("state", self._state))
        if self._stop_requested and state in ("starting", "running", "paused"):
            state = "stopping"  # asked to stop; the child says so at its next tick
        self._state = state

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the child to finish in-flight work (or release it) and wait until it has
        exited; True when it has. If it has not within `timeout`, it is told to release its
        jobs at once, and killed if even that does not end it. Safe to call more than once,
        or never started."""
        self.request_stop()
        if not self.started:
            return True
        if self.done.wait(timeout):
            return True
        self.request_stop(force=True)
        if self.done.wait(5.0):
            return True
        process = self._process
        if process is not None and process.is_alive():
            process.kill()
        return self.done.wait(5.0)
