"""The live-polling contract between the console and what it shows.

Every refresh, the console asks the screen on show (under any dialog) for its live view;
the view plans a fetch on the UI loop (capturing what it needs: filters, window, ids),
the fetch runs in a thread (database work only), and its result is applied back on the UI
loop, if the view is still attached. Screens without a live view are simply not polled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

T = TypeVar("T")


class LiveView(Protocol[T]):
    """Something on screen that the poll refreshes."""

    def plan(self) -> Callable[[], T]:
        """On the UI loop: the fetch to run in the poll's thread (no UI access in it)."""
        ...

    def apply(self, data: T) -> None:
        """On the UI loop: show what the fetch returned."""
        ...

    @property
    def is_attached(self) -> bool: ...  # Textual's: still in the DOM


@runtime_checkable
class LiveScreen(Protocol):
    def live_target(self) -> LiveView[Any] | None:
        """The view the poll refreshes now (None: nothing to poll). Its data type is the
        view's own business: the poll only hands plan()'s result back to apply()."""
        ...


class Pane(Protocol):
    """One of the main screen's panes (1-6)."""

    def focus_table(self) -> None: ...

    def refresh_now(self) -> None:
        """Switched to: fresh data on the next poll, whatever it costs."""
        ...
