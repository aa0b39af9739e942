"""Pausing an upstream: how long, then enter (the dialog is the confirmation).

A duration typed as the CLI takes it (`30s`, `5m`, `1h`: `syncbridge upstream pause
--for`), or one of the usual choices as a button. Esc keeps things as they are.
"""

from __future__ import annotations

import argparse
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from syncbridge_tui.commands.upstreams import duration

CHOICES = (("1m", 60.0), ("5m", 300.0), ("15m", 900.0), ("1h", 3600.0))
DEFAULT = "5m"


class PauseScreen(ModalScreen[float | None]):
    """Dismisses with the pause in seconds, or None (kept as it is)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Keep", id="pause.close")]

    def __init__(self, title: str, body: Text, *, blink: bool = True) -> None:
        super().__init__(classes="modal")
        self.title_text = title
        self.body = body
        self.blink = blink

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Static(Text(self.title_text, style="bold"), classes="dialog-title")
            yield Static(self.body, id="confirm-body")
            yield Static(Text("for how long (30s, 5m, 1h; up to 7 days), then enter",
                              style="dim"))
            field = Input(value=DEFAULT, id="pause-for", max_length=12)
            field.cursor_blink = self.blink
            yield field
            yield Static(Text(" "), id="pause-error")
            with Horizontal(classes="buttons", id="pause-choices"):
                for label, _ in CHOICES:
                    yield Button(f"Pause {label}", variant="warning", id=f"for-{label}")
                yield Button("Keep (esc)", id="keep")

    def on_mount(self) -> None:
        field = self.query_one("#pause-for", Input)
        field.focus()
        field.select_all()  # typing replaces the default

    @on(Input.Submitted, "#pause-for")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        try:
            seconds = duration(event.value)
        except argparse.ArgumentTypeError as exc:
            self.query_one("#pause-error", Static).update(Text(str(exc), style="bold red"))
            return
        self.dismiss(seconds)

    @on(Input.Changed, "#pause-for")
    def _changed(self) -> None:
        self.query_one("#pause-error", Static).update(Text(" "))

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        chosen = dict(CHOICES).get((event.button.id or "").removeprefix("for-"))
        self.dismiss(chosen)

    def action_close(self) -> None:
        self.dismiss(None)
