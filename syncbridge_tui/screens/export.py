"""Where to export the current view; the file name's extension picks CSV or JSON."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static


class ExportScreen(ModalScreen[str | None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss_none", "Cancel", id="export.cancel")]

    def __init__(self, default_path: str, what: Text, blink: bool = True) -> None:
        super().__init__(classes="modal")
        self.default_path = default_path
        self.what = what
        self.blink = blink

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Static(Text("Export the current view", style="bold"), classes="dialog-title")
            yield Static(self.what)
            field = Input(self.default_path, id="export-path")
            field.cursor_blink = self.blink
            yield field
            yield Static(Text("ends in .csv or .json · enter exports · esc cancels",
                              style="dim"), id="export-error")

    @on(Input.Submitted)
    def _submit(self, event: Input.Submitted) -> None:
        path = event.value.strip()
        if not path.lower().endswith((".csv", ".json")):
            self.query_one("#export-error", Static).update(
                Text("the file name must end in .csv or .json", style="bold red"))
            return
        self.dismiss(path)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
