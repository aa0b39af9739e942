"""The enqueue form: job type and entity id, validated as you type.

A duplicate (an active job exists for that entity) is not an error to dismiss: the form
says which job it is and offers to open it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Select, Static

from core import enqueue, errors
from syncbridge_tui.context import InThread
from syncbridge_tui.text import clean

Submit = Callable[[str, str], enqueue.EnqueueResult]  # (job type, entity id): the enqueue


class EnqueueScreen(ModalScreen[int | None]):
    """Dismisses with the id of the job to open (new or existing), or None."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close", id="enqueue.close")]

    def __init__(self, job_types: list[str], *, submit: Submit, in_thread: InThread,
                 refuse_if_read_only: Callable[[str], bool], blink: bool = True) -> None:
        super().__init__(classes="modal")
        self.job_types = job_types
        self.submit = submit
        self.in_thread = in_thread
        self.refuse_if_read_only = refuse_if_read_only
        self.blink = blink
        self.existing_id: int | None = None
        self.busy = False

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Static(Text("Enqueue a job", style="bold"), classes="dialog-title")
            yield Static(Text("job type", style="dim"))
            yield Select([(t, t) for t in self.job_types], value=self.job_types[0],
                         allow_blank=False, id="job-type")
            yield Static(Text("entity id", style="dim"))
            entity = Input(placeholder="e.g. c_1001", id="entity-id", max_length=200)
            entity.cursor_blink = self.blink
            yield entity
            yield Static(Text(" "), id="enqueue-message")
            with Horizontal(classes="buttons"):
                yield Button("Enqueue (enter)", variant="primary", id="submit")
                yield Button("Open existing job", id="open-existing", disabled=True)
                yield Button("Close (esc)", id="close")

    def on_mount(self) -> None:
        self.query_one("#entity-id", Input).focus()

    def _message(self, text: str, style: str) -> None:
        self.query_one("#enqueue-message", Static).update(Text(text, style=style))

    def _validate(self) -> str | None:
        value = self.query_one("#entity-id", Input).value
        try:
            enqueue.validate_entity_id(value)
        except errors.InvalidInput as exc:
            return str(exc)
        return None

    @on(Input.Changed, "#entity-id")
    def _changed(self, event: Input.Changed) -> None:
        self.existing_id = None
        self.query_one("#open-existing", Button).disabled = True
        error = self._validate() if event.value else None
        self._message(error or " ", "bold red")

    @on(Input.Submitted, "#entity-id")
    @on(Button.Pressed, "#submit")
    def _submit(self) -> None:
        if self.busy:
            return
        error = self._validate()
        if error:
            self._message(error, "bold red")
            return
        job_type = str(self.query_one("#job-type", Select).value)
        entity = self.query_one("#entity-id", Input).value
        if self.refuse_if_read_only("enqueue"):
            return
        self.busy = True
        submit = self.submit
        self.in_thread(lambda: submit(job_type, entity),
                       lambda result: self._done(job_type, result), on_error=self._failed)

    def _failed(self, exc: BaseException) -> None:
        self.busy = False
        self._message(clean(str(exc), 200), "bold red")

    def _done(self, job_type: str, result: enqueue.EnqueueResult) -> None:
        self.busy = False
        if result.created:
            self.app.notify(f"enqueued {job_type} {clean(result.entity_id, 40)!r} as job "
                            f"{result.job_id}", title="Enqueued")
            self.dismiss(None)
            return
        self.existing_id = result.job_id
        self._message(f"duplicate: an active {job_type} job for {clean(result.entity_id, 40)!r} "
                      f"already exists: job {result.job_id}", "bold yellow")
        button = self.query_one("#open-existing", Button)
        button.label = f"Open job {result.job_id}"
        button.disabled = False
        button.focus()

    @on(Button.Pressed, "#open-existing")
    def _open_existing(self) -> None:
        self.dismiss(self.existing_id)

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(None)
