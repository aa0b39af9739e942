"""What screens and widgets may ask of the console: a typed interface (the console app
implements it), so that they never reach for `self.app` and never import the app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from core import reads
from core.config import Settings
from core.db import Database
from core.schedules import Schedule
from core.upstream_protection import Policy, UpstreamState
from syncbridge_tui.engine import LogBuffer

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class UpstreamScope:
    """What the console knows of upstream protection without the database: the policy
    from the settings (configured limits, cool-down) and the app's declarations (job type
    -> upstreams; the fleet's recorded ones are added at each read)."""

    policy: Policy = field(default_factory=Policy)
    declared: dict[str, tuple[str, ...]] = field(default_factory=dict)


class InThread(Protocol):
    def __call__(self, fn: Callable[[], T], done: Callable[[T], None],
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        """Run `fn` (database work) in a thread; `done`/`on_error` run back on the UI loop."""
        ...


class Console(Protocol):
    @property
    def db(self) -> Database: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def log_buffer(self) -> LogBuffer: ...

    def schedules(self) -> list[Schedule]:
        """The app's recurring schedules (the workers pane shows them)."""
        ...

    def in_thread(self, fn: Callable[[], T], done: Callable[[T], None],
                  on_error: Callable[[BaseException], None] | None = None) -> None: ...

    def request_poll(self) -> None:
        """Refresh what is on show (soon, from a thread)."""
        ...

    def open_detail(self, job_id: int) -> None: ...

    def show_logs(self, job_id: int, correlation_id: str) -> None: ...

    def job_action(self, verb: str, targets: dict[int, str | None],
                   on_done: Callable[[list[int]], None]) -> None:
        """retry / replay / cancel, confirmed first (syncbridge_tui.actions)."""
        ...

    def export_view(self, flt: reads.JobFilter, sort: str, what: str) -> None: ...

    def job_types(self) -> list[str]:
        """The app's job types (the type filter, the enqueue form)."""
        ...

    def upstream_scope(self) -> UpstreamScope:
        """The upstreams pane's and the hold reasons' policy and app declarations."""
        ...

    def upstream_action(self, verb: str, seen: UpstreamState | None,
                        on_done: Callable[[], None]) -> None:
        """pause / resume / reset / open an upstream, confirmed first (syncbridge_tui.actions);
        `seen` is the state the console last showed."""
        ...
