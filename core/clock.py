"""The single clock seam: every timestamp the engine writes comes from `now()`.

Timestamps are float seconds since the Unix epoch (UTC). Floats compare and index the
same way on SQLite and PostgreSQL, cost nothing to convert on the hot path, and carry
no time-zone ambiguity; the faces format them for people.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

_clock: Callable[[], float] = time.time


def now() -> float:
    return _clock()


def set_clock(clock: Callable[[], float] | None) -> None:
    """Replace the clock (tests, snapshots); None restores wall time."""
    global _clock
    _clock = clock or time.time


def to_datetime(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
