"""The console's embedded worker, in a child process: the child's side of the wire.

Why a process and not a thread: core's Worker draining at full speed is Python code that
holds the GIL most of the time. In the console's own process every refresh, key press and
repaint waited for that GIL (refreshes took over a second on a big queue), so "a worker
at full speed" and "a UI that answers at once" cannot share one interpreter. This is a
deliberate departure from "the worker in a background thread" of the design: the console
supervises one child process (multiprocessing, spawn context) that runs an ordinary core
Worker, and talks to it over two one-way pipes.

This module is imported by both sides but imports only core (never Textual or Rich), so
the child loads nothing of the console. The parent's side is syncbridge_tui.engine.

Wire protocol (pickled tuples over multiprocessing Connections):

- parent -> child (`commands`): ("pause",), ("resume",), ("cancel", job_id), ("wake",),
  ("stop", force). End of file means the console is gone: the child stops gracefully
  (finishes in-flight work within the shutdown timeout, releases the rest) and exits.
- child -> parent (`events`): ("hello", {pid, textual_loaded}), ("tick", status, events)
  at most every TICK_SECONDS (status: state, jobs/s, processed, in flight; events: the
  worker's structlog event dicts since the last tick, batched, at most LOG_BACKLOG of
  them), ("error", one line) when the worker cannot start, ("stopped", status) last.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from core.config import Settings
from core.logging import one_line
from core.shutdown import stop_on_signals

if TYPE_CHECKING:
    from core.worker import Worker

TICK_SECONDS = 0.1  # the longest a log line or a state change waits before it is sent
IDLE_TICK_SECONDS = 0.5  # with nothing new, a status still goes out this often
LOG_BACKLOG = 5000  # the console's log buffer keeps 5,000 lines; the child never more
_SCALARS = (str, int, float, bool, type(None))


@dataclass(slots=True)
class WorkerSpec:
    """Everything the child needs, picklable: settings, the database URL (with its password:
    it only travels over a local pipe), and core Worker's keyword arguments (a Registry,
    a mock upstream, start_paused...)."""

    settings: Settings
    database_url: str
    concurrency: int
    worker_kwargs: dict[str, Any] = field(default_factory=dict)


def _plain(event: MutableMapping[str, Any]) -> dict[str, Any]:
    """A log event with only picklable scalar values (anything else as its str)."""
    return {str(k): v if isinstance(v, _SCALARS) else str(v) for k, v in event.items()}


class EventSender:
    """Ships the worker's state and log events to the console in batches, from one thread.

    The structlog sink only appends to a bounded deque (no I/O on the worker's threads);
    this thread sends one message per tick, whatever the worker's rate.
    """

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._events: deque[MutableMapping[str, Any]] = deque(maxlen=LOG_BACKLOG)
        self._lock = threading.Lock()  # one sender at a time (this thread, or the last words)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="syncbridge-events",
                                        daemon=True)
        self.worker: Worker | None = None
        self.broken = False  # the console is gone

    def sink(self, event: MutableMapping[str, Any]) -> None:
        self._events.append(event)  # deque.append is atomic; maxlen drops the oldest

    def start(self) -> None:
        self._thread.start()

    def status(self) -> dict[str, Any]:
        w = self.worker
        if w is None:
            return {"state": "starting", "rate": 0.0, "processed": 0, "in_flight": 0}
        return {"state": w.state, "rate": w.throughput(), "processed": w.stats.processed,
                "in_flight": w.in_flight, "concurrency": w.concurrency}

    def send(self, message: tuple[Any, ...]) -> None:
        with self._lock:
            if self.broken:
                return
            try:
                self._conn.send(message)
            except (OSError, EOFError, ValueError):
                self.broken = True  # the console went away; the command reader stops us

    def _take(self) -> list[dict[str, Any]]:
        batch = []
        while True:
            try:
                batch.append(_plain(self._events.popleft()))
            except IndexError:
                return batch

    def tick(self) -> None:
        self.send(("tick", self.status(), self._take()))

    def _run(self) -> None:
        last_status: dict[str, Any] | None = None
        last_sent = 0.0
        while not self._stop.wait(TICK_SECONDS):
            status = self.status()
            # throughput changes every tick while draining; only an idle worker goes quiet
            if (self._events or status != last_status
                    or time.monotonic() - last_sent >= IDLE_TICK_SECONDS):
                self.send(("tick", status, self._take()))
                last_status, last_sent = status, time.monotonic()

    def close(self, final: tuple[Any, ...]) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.tick()  # the last log lines (worker.stopped...)
        self.send(final)
        with self._lock:
            self._conn.close()


def _read_commands(conn: Connection, worker: Worker, parent_gone: threading.Event) -> None:
    from core.db import local_wakeup

    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            # The console exited or was killed: never outlive it, and never leave a lease.
            parent_gone.set()
            worker.request_stop()
            return
        verb = msg[0]
        if verb == "pause":
            worker.pause()
        elif verb == "resume":
            worker.resume()
        elif verb == "cancel":
            worker.cancel_local(int(msg[1]))
        elif verb == "wake":
            local_wakeup.fire()  # the in-process wake-up the worker subscribed to in run()
        elif verb == "stop":
            worker.request_stop(force=bool(msg[1]))


def _quiet_stdio() -> None:
    """The console owns the terminal: nothing the child prints may reach it."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (1, 2):
        try:
            os.dup2(devnull, fd)
        except OSError:
            pass
    os.close(devnull)


def child_main(commands: Connection, events: Connection, spec: WorkerSpec) -> None:
    """The child process's body (multiprocessing target)."""
    _quiet_stdio()
    # ctrl+c belongs to the console (it quits gracefully and tells us); a terminal hang-up
    # or a TERM is a graceful stop, a second one a stop that releases in-flight jobs now.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sender = EventSender(events)
    sender.send(("hello", {"pid": os.getpid(), "textual_loaded": "textual" in sys.modules}))
    worker = None
    db = None
    try:
        from core import logging as sblog
        from core.db import Database
        from core.worker import Worker

        settings = spec.settings
        sblog.configure(level=settings.log_level, log_file=settings.log_file, quiet=True)
        sblog.add_sink(sender.sink)
        db = Database(spec.database_url, pool_size=max(4, min(32, spec.concurrency)))
        db.ping()
        worker = Worker(db, settings, concurrency=spec.concurrency, **spec.worker_kwargs)
    except Exception as exc:  # shown in the console's header and a toast, never a traceback
        sender.send(("error", one_line(exc)))
        sender.close(("stopped", sender.status()))
        if db is not None:
            db.dispose()
        return
    sender.worker = worker
    stop_on_signals(worker, (signal.SIGTERM, signal.SIGHUP))
    parent_gone = threading.Event()
    threading.Thread(target=_read_commands, args=(commands, worker, parent_gone),
                     name="syncbridge-commands", daemon=True).start()
    sender.start()
    error: str | None = None
    try:
        asyncio.run(worker.run())
    except BaseException as exc:  # the worker's loop died: say why, then exit
        error = one_line(exc)
    if error is not None:
        sender.send(("error", error))
    sender.close(("stopped", sender.status()))
    db.dispose()
