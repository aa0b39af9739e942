"""Every key, grouped, with the keys the user's keymap file put in place."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from syncbridge_tui import keymap


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "close", "Close", id="help.close")]

    def __init__(self, overrides: dict[str, str], read_only: bool) -> None:
        super().__init__(classes="modal")
        self.overrides = overrides
        self.read_only = read_only

    def compose(self) -> ComposeResult:
        grid = Table.grid(padding=(0, 2), expand=True)
        grid.add_column(style="bold cyan", no_wrap=True, width=16)
        grid.add_column(ratio=1)
        grid.add_column(style="dim", no_wrap=True, width=14)
        for group, title in keymap.GROUP_TITLES.items():
            grid.add_row(Text(title, style="bold underline"), "", "")
            for key in keymap.ALL:
                if key.group == group:
                    grid.add_row(keymap.show_key(keymap.effective_key(key, self.overrides)),
                                 key.help, key.id)
            grid.add_row("", "", "")
        grid.add_row(Text("Palette", style="bold underline"), "", "")
        grid.add_row("ctrl+p", "command palette: every action by name", "")
        grid.add_row("↑ ↓ pgup pgdn", "move (as j / k)", "")
        with VerticalScroll(id="dialog", classes="dialog help"):
            yield Static(Text("SyncBridge keys", style="bold"), classes="dialog-title")
            yield Static(grid)
            note = Text(f"Remap any key by its id (right column) in {keymap.keymap_path()}, "
                        "e.g. [keys] retry = \"R\". Actions apply to the marked jobs when "
                        "there are any, else to the cursor's.", style="dim")
            if self.read_only:
                note.append("\nREAD-ONLY: retry, replay, cancel, enqueue, pause/resume and "
                            "the upstream controls are disabled.", style="bold yellow")
            yield Static(note)

    def action_close(self) -> None:
        self.dismiss(None)
