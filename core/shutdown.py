"""Stopping a worker on signals: the first asks for a graceful stop (stop claiming, finish
in-flight work within the shutdown timeout), the second for a stop now (in-flight work is
released instead of awaited).

One implementation for every process that runs a worker: the headless worker
(`syncbridge --worker-only`) and the console's worker child process. Handlers are
process-wide (`signal.signal`), so install them in the main thread, before the worker's
event loop starts; the target's `request_stop` must be safe to call from a signal handler
(core's Worker hands it to its loop with call_soon_threadsafe).
"""

from __future__ import annotations

import signal
from collections.abc import Iterable
from types import FrameType
from typing import Protocol


class Stoppable(Protocol):
    def request_stop(self, *, force: bool = False) -> None: ...


class StopOnSignals:
    """Counts the stop signals received and asks `target` to stop: gracefully at the first,
    at once from the second on."""

    def __init__(self, target: Stoppable) -> None:
        self.target = target
        self.received = 0

    def handle(self, _signum: int = 0, _frame: FrameType | None = None) -> None:
        self.received += 1
        self.target.request_stop(force=self.received > 1)


def stop_on_signals(target: Stoppable,
                    signals: Iterable[signal.Signals] = (signal.SIGINT, signal.SIGTERM),
                    ) -> StopOnSignals:
    """Install the handlers for `signals` (main thread only) and return them."""
    handler = StopOnSignals(target)
    for sig in signals:
        signal.signal(sig, handler.handle)
    return handler
