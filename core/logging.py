"""structlog configuration: JSON lines, correlation ids bound per job, optional in-process
sinks (the console's log pane subscribes to one).

Used as a library, SyncBridge writes no log line until logging is configured: `configure()`
(the CLI, the console and `serve` call it) or `configure_library()` for an application's own
setup. Until then `get_logger` hands out a logger that drops everything, and structlog
(which imports rich when rich is installed) is not imported at all.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

Sink = Callable[[MutableMapping[str, Any]], None]
_sinks: list[Sink] = []
_sinks_lock = threading.Lock()
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_configured = False


class _NullLogger:
    """What get_logger gives before logging is configured: every call does nothing."""

    def bind(self, **_kw: Any) -> _NullLogger:
        return self

    def is_enabled_for(self, _level: int) -> bool:
        return False

    def _drop(self, *_args: Any, **_kw: Any) -> None:
        return None

    debug = info = warning = error = exception = critical = msg = _drop


_NULL = _NullLogger()


def is_configured() -> bool:
    return _configured


def one_line(exc: BaseException) -> str:
    """An error as an operator reads it in a log line, a toast or the CLI: its first line,
    or its class name when it has no message."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def add_sink(sink: Sink) -> Callable[[], None]:
    """Receive every event dict (after level filtering); returns an unsubscribe function."""
    with _sinks_lock:
        _sinks.append(sink)

    def remove() -> None:
        with _sinks_lock:
            if sink in _sinks:
                _sinks.remove(sink)

    return remove


def _fan_out(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    if _sinks:
        with _sinks_lock:
            sinks = list(_sinks)
        for sink in sinks:
            sink(dict(event))
    return event


def configure(*, level: str = "info", stream: TextIO | None = None,
              log_file: str | None = None, quiet: bool = False) -> None:
    """JSON lines to `log_file` if given, else to `stream` (stderr); `quiet` writes nowhere
    (sinks still receive events)."""
    import structlog

    global _configured
    if log_file:
        out: TextIO | None = open(log_file, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
    elif quiet:
        out = None
    else:
        out = stream or sys.stderr
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _fan_out,
    ]
    if out is None:
        processors.append(_drop)
        factory: Any = structlog.ReturnLoggerFactory()
    else:
        processors.append(structlog.processors.JSONRenderer())
        factory = structlog.WriteLoggerFactory(file=out)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    _configured = True


def _drop(_logger: Any, _method: str, _event: MutableMapping[str, Any]) -> str:
    return ""


def get_logger(**bound: Any) -> Any:
    if not _configured:
        return _NULL
    import structlog

    return structlog.get_logger("syncbridge").bind(**bound)
