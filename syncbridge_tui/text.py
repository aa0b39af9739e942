"""Formatting shared by the CLI and the console: times, ages, untrusted text."""

from __future__ import annotations

import re

from core import clock

# Whole escape sequences first (CSI "ESC[31m", OSC "ESC]0;title BEL"), then any control
# character left: removing only the ESC byte would leave "[31m" behind on screen.
_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: window titles, hyperlinks
    r"|\x1b[@-Z\\-_]"  # other two-byte escapes
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)


def clean(text: object, limit: int | None = None) -> str:
    """Untrusted text made safe to show: ANSI escapes and control characters removed,
    newlines and tabs folded to spaces. (Markup safety is the renderer's job: the console
    wraps this in rich Text, never a markup string.)"""
    if text is None:
        return ""
    out = _CONTROL.sub("", str(text).replace("\n", " ").replace("\t", " "))
    if limit is not None and len(out) > limit:
        out = out[: max(0, limit - 1)] + "…"
    return out


def ago(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return "-"
    delta = (now if now is not None else clock.now()) - ts
    return span(abs(delta)) + (" ago" if delta >= 0 else "")


def until(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return "-"
    delta = ts - (now if now is not None else clock.now())
    return "now" if delta <= 0 else "in " + span(delta)


def span(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h{(seconds % 3600) // 60:02.0f}m"
    return f"{seconds // 86400:.0f}d{(seconds % 86400) // 3600:02.0f}h"


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}ms"


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"
