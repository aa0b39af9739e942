"""Untrusted values turned into table cells and labels: always rich Text, never markup.

A plain `str` in a DataTable cell is parsed as console markup, so an upstream error
message like "[link=…]click[/]" would restyle the screen. Every cell goes through `cell()`,
which strips control characters and ANSI escapes (text.clean) and builds a Text object
whose content is taken literally.
"""

from __future__ import annotations

from rich.text import Text

from syncbridge_tui.text import clean

STATUS_STYLES = {
    "pending": "yellow",
    "running": "bold cyan",
    "success": "green",
    "failed": "bold red",
    "dead": "bold magenta",
    "canceled": "dim",
}

OUTCOME_STYLES = {
    "success": "green",
    "retry": "yellow",
    "failed": "bold red",
    "dead": "bold magenta",
    "running": "bold cyan",
    "canceled": "dim",
    "released": "dim",
    "lease_expired": "red",
    "lease_lost": "red",
    "timeout": "yellow",
}


def cell(value: object, style: str = "", limit: int | None = None) -> Text:
    return Text(clean(value, limit), style=style, no_wrap=True, overflow="ellipsis")


def status_cell(status: str) -> Text:
    return cell(status, STATUS_STYLES.get(status, ""))


def outcome_cell(outcome: str) -> Text:
    return cell(outcome, OUTCOME_STYLES.get(outcome, ""))


def dash(value: object | None, style: str = "") -> Text:
    return cell("-" if value in (None, "") else value, style)
