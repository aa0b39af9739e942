"""Every key binding of the console, each with a stable id, and the user's keymap file.

The ids are the contract: a keymap file maps ids to keys, e.g.

    # ~/.config/syncbridge/keymap.toml (or the file named by SYNCBRIDGE_KEYMAP)
    [keys]
    retry = "R"
    replay = "P,ctrl+r"

Textual applies the mapping itself (`App.set_keymap`), so a remapped key works in every
screen that uses the binding, and the footer, help screen and palette show the new key.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from textual.binding import Binding, BindingType


@dataclass(frozen=True, slots=True)
class Key:
    id: str
    key: str
    action: str
    description: str
    help: str
    show: bool = True
    group: str = "global"
    priority: bool = False

    def binding(self) -> Binding:
        return Binding(self.key, self.action, self.description, show=self.show, id=self.id,
                       priority=self.priority)


# Global: on the App, so they work from every screen that does not take them itself.
GLOBAL = [
    Key("help", "question_mark", "show_help", "Help", "show every key"),
    Key("quit", "q", "quit_console", "Quit", "quit (stops the embedded worker gracefully)"),
    Key("interrupt", "ctrl+c,ctrl+q", "interrupt", "Quit", "quit, from anywhere (even a dialog)",
        show=False, priority=True),
    Key("pane.jobs", "1", "switch_pane('jobs')", "Jobs", "jobs pane", show=False),
    Key("pane.dead", "2", "switch_pane('dead')", "Dead", "dead-letter pane", show=False),
    Key("pane.metrics", "3", "switch_pane('metrics')", "Metrics", "metrics pane", show=False),
    Key("pane.workers", "4", "switch_pane('workers')", "Workers", "workers pane", show=False),
    Key("pane.log", "5", "switch_pane('log')", "Log", "log pane", show=False),
    Key("pane.upstreams", "6", "switch_pane('upstreams')", "Upstreams", "upstreams pane",
        show=False),
    Key("enqueue", "e", "enqueue", "Enqueue", "enqueue a job (form)"),
    Key("worker.toggle", "w", "toggle_worker", "Pause", "pause or resume the embedded worker"),
    Key("freeze", "f", "toggle_freeze", "Freeze", "freeze or resume live refresh"),
]

# Job lists (jobs and dead-letter panes).
LIST = [
    Key("search", "slash", "start_search", "Search", "search entity id, job id, correlation id",
        group="list"),
    Key("clear", "escape", "clear", "Clear", "clear search, filters and marks", show=False,
        group="list"),
    Key("open", "enter", "open_detail", "Detail", "open the job's detail", group="list"),
    Key("mark", "space", "toggle_mark", "Mark", "mark / unmark the job", group="list"),
    Key("mark_all", "asterisk", "mark_all", "Mark all",
        "mark every job matching the current filter", show=False, group="list"),
    Key("retry", "r", "job_action('retry')", "Retry", "retry (same job, fresh budget)",
        group="list"),
    Key("replay", "p", "job_action('replay')", "Replay", "replay as a new linked job",
        group="list"),
    Key("cancel", "c", "job_action('cancel')", "Cancel", "cancel a pending/running job",
        group="list"),
    Key("logs", "l", "job_logs", "Logs", "the job's log lines (by correlation id)",
        show=False, group="list"),
    Key("filter.status", "a", "cycle_status", "Status", "filter by status (cycles)",
        group="list"),
    Key("filter.type", "t", "cycle_type", "Type", "filter by job type (cycles)", show=False,
        group="list"),
    Key("sort", "s", "cycle_sort", "Sort", "sort: age, oldest, status, type", show=False,
        group="list"),
    Key("export", "ctrl+s", "export", "Export", "export the current view to CSV or JSON",
        show=False, group="list"),
]

# Movement inside tables (on the table widget itself, beside the arrows it already has).
MOVE = [
    Key("down", "j", "cursor_down", "Down", "move down", show=False, group="move"),
    Key("up", "k", "cursor_up", "Up", "move up", show=False, group="move"),
    Key("top", "g", "scroll_top", "Top", "go to the top", show=False, group="move"),
    Key("bottom", "G", "scroll_bottom", "Bottom", "go to the bottom", show=False,
        group="move"),
]

# The job detail screen.
DETAIL = [
    Key("back", "escape", "back", "Back", "back to the list", group="detail"),
    # Same ids as in the lists: one remap moves the key everywhere.
    Key("retry", "r", "job_action('retry')", "Retry", "retry this job", group="detail"),
    Key("replay", "p", "job_action('replay')", "Replay", "replay this job", group="detail"),
    Key("cancel", "c", "job_action('cancel')", "Cancel", "cancel this job", group="detail"),
    Key("detail.origin", "o", "open_origin", "Replay of", "open the job this one replays",
        group="detail"),
    Key("detail.newest", "n", "open_replay", "Replayed as", "open the newest replay of this job",
        group="detail"),
    Key("logs", "l", "job_logs", "Logs", "this job's log lines", group="detail"),
]

# The log pane (on the main screen).
LOG = [
    Key("log.all", "escape", "log_all", "All lines", "back to every line after l",
        show=False, group="log"),
]

# The upstreams pane (upstream protection: core.upstream_protection). Each is confirmed,
# audited with the OS user as actor, and refused in a read-only console.
UPSTREAMS = [
    Key("upstream.pause", "p", "upstream_action('pause')", "Pause upstream",
        "pause the upstream fleet-wide (asks how long)", group="upstreams"),
    Key("upstream.resume", "u", "upstream_action('resume')", "Resume upstream",
        "lift the upstream's pause", group="upstreams"),
    Key("upstream.reset", "c", "upstream_action('reset')", "Close breaker",
        "reset: close the breaker, forget failures, pause and adaptive rate",
        group="upstreams"),
    Key("upstream.open", "o", "upstream_action('open')", "Open breaker",
        "open the breaker by hand (one probe after the cool-down)", group="upstreams"),
]

# Confirmation dialogs.
DIALOG = [
    Key("confirm.yes", "y,enter", "answer(True)", "Yes", "confirm", group="dialog"),
    Key("confirm.no", "n,escape", "answer(False)", "No", "keep things as they are",
        group="dialog"),
]

ALL = GLOBAL + LIST + MOVE + DETAIL + LOG + UPSTREAMS + DIALOG
GROUP_TITLES = {"global": "Everywhere", "list": "Job lists",
                "move": "Moving", "detail": "Job detail", "log": "Log pane",
                "upstreams": "Upstreams pane", "dialog": "Confirmations"}


def bindings(keys: list[Key]) -> list[BindingType]:
    return [k.binding() for k in keys]


def keymap_path() -> Path:
    explicit = os.environ.get("SYNCBRIDGE_KEYMAP")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "syncbridge" / "keymap.toml"


class KeymapError(ValueError):
    """The keymap file cannot be used; the message is one line."""


def load_keymap(path: Path | None = None) -> dict[str, str]:
    """The user's overrides (binding id -> comma-separated keys); {} when there is no file.

    Accepts a `[keys]` table or top-level `id = "key"` pairs. Unknown ids are refused so a
    typo does not silently do nothing.
    """
    path = path or keymap_path()
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise KeymapError(f"keymap {path}: {exc}") from None
    table = data.get("keys", data)
    if not isinstance(table, dict):
        raise KeymapError(f"keymap {path}: [keys] must be a table")
    known = {k.id for k in ALL}
    out: dict[str, str] = {}
    for binding_id, keys in table.items():
        if binding_id not in known:
            raise KeymapError(f"keymap {path}: unknown binding id {binding_id!r}")
        if not isinstance(keys, str) or not keys.strip():
            raise KeymapError(f"keymap {path}: {binding_id} must be a key string like \"R\"")
        out[binding_id] = keys.strip()
    return out


def effective_key(key: Key, overrides: dict[str, str]) -> str:
    return overrides.get(key.id, key.key)


_NAMES = {"question_mark": "?", "slash": "/", "space": "space", "asterisk": "*",
          "escape": "esc", "enter": "enter"}


def show_key(keys: str) -> str:
    return " / ".join(_NAMES.get(k.strip(), k.strip()) for k in keys.split(","))


_WHERE = {"global": "everywhere", "list": "job lists", "move": "tables, log",
          "detail": "job detail", "log": "log pane", "upstreams": "upstreams pane",
          "dialog": "confirmations"}


def markdown_table() -> str:
    """The README's key table, from the bindings themselves (one row per binding id)."""
    rows = ["| key | where | does | binding id |", "|---|---|---|---|"]
    where: dict[str, list[str]] = {}
    first: dict[str, Key] = {}
    for key in ALL:
        where.setdefault(key.id, []).append(_WHERE[key.group])
        first.setdefault(key.id, key)
    for key_id, key in first.items():
        rows.append(f"| `{show_key(key.key)}` | {', '.join(where[key_id])} | {key.help} "
                    f"| `{key_id}` |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
