"""A live, windowed list of jobs: the jobs pane and (with a fixed status) the dead letters.

Only the rows that fit on screen are fetched (`list_jobs(limit=page, offset=…)`, which the
status/type/id indexes serve), the count is capped, and rows are rewritten in place. The
cursor follows its job while rows move under it (new jobs arriving on top, statuses
changing under a status sort).

`G` (the end of the list: the oldest jobs) does not count a million rows and skip them: the
window is anchored at the end (`ListState.from_end`, `offset` rows before it) and fetched
by walking the same index from its other end (`core.reads.list_jobs(from_end=True)`); the
position on screen comes from the capped count ("… of 100,000+" when there are more).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.timer import Timer
from textual.widgets import DataTable, Input, Static

from core import reads, upstream_protection
from core.db import Database
from core.reads import job_ids, latest_replays
from core.records import Job
from core.statuses import STATUSES
from syncbridge_tui import keymap
from syncbridge_tui.cells import cell, dash, status_cell
from syncbridge_tui.context import Console
from syncbridge_tui.text import ago, clean, until
from syncbridge_tui.widgets.window_table import WindowTable

COUNT_CAP = 100_000
MARK_ALL_CAP = 10_000
SORT_ORDER = ("age", "oldest", "status", "type")
SEARCH_DEBOUNCE = 0.25
# Sorts whose ORDER BY reversed is an index walk too (status ASC, id DESC is not: G keeps
# counting and skipping there, as slow as that sort's first page already is).
FROM_END_SORTS = ("age", "oldest", "type")


@dataclass(slots=True)
class Window:
    """What one poll fetches: the query and the slice of its result."""

    flt: reads.JobFilter
    sort: str
    offset: int
    page: int
    generation: int
    to_bottom: bool = False
    anchor_id: int | None = None  # keep this job on the window's first row (sort age)
    from_end: bool = False  # the window is `end_offset` rows before the end of the list
    end_offset: int = 0


@dataclass(slots=True)
class WindowResult:
    window: Window
    jobs: list[Job]
    total: int
    capped: bool
    extra: Any = None  # what a pane's `annotate` fetched for these rows
    position_known: bool = True  # False: from the end of more than COUNT_CAP rows


@dataclass(slots=True)
class ListState:
    statuses: tuple[str, ...] = ()
    job_type: str | None = None
    search: str = ""
    sort: str = "age"
    offset: int = 0  # rows above the window (exact unless from_end past the count's cap)
    from_end: bool = False  # after G: the window is anchored at the end of the list
    end_offset: int = 0  # rows below the window, when from_end
    marked: dict[int, str | None] = field(default_factory=dict)  # id -> status when marked


class JobList(Vertical):
    """Shared by the jobs and dead-letter panes; subclasses choose columns and filters."""

    BINDINGS = keymap.bindings(keymap.LIST)
    COLUMNS: list[tuple[str, int]] = []
    FIXED_STATUSES: tuple[str, ...] = ()
    TITLE = "Jobs"

    def __init__(self, console: Console, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="pane job-list")
        self.console = console
        self.state = ListState(statuses=self.FIXED_STATUSES)
        self.jobs: list[Job] = []
        self.extra: Any = None
        self.total = 0
        self.capped = False
        self.position_known = True
        self.selected_id: int | None = None
        self._follow = True
        self._pending_bottom = False
        # Bumped by every move or query change the operator makes: a poll planned before
        # it is stale and must not put the window back where it was.
        self._generation = 0
        self._explicit = True
        self._want_row: int | None = None  # after g / G: row 0 / the last row (-1)
        self._search_timer: Timer | None = None
        # Between `/` and the search box having focus: the keys typed meanwhile, in order.
        self._typeahead: list[events.Key | events.Paste] | None = None
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield Static(id="list-title", classes="pane-title")
        search = Input(placeholder="search: entity id, job id or correlation id (prefix) "
                                   "— enter keeps it, esc clears", id="search")
        # Hidden and disabled until `/`: keys typed early (a slow start) never land in it.
        search.display = False
        search.disabled = True
        yield search
        table = WindowTable(id="table")
        self._layout = list(self.COLUMNS)
        self._keep = list(range(len(self.COLUMNS)))
        for label, width in self.COLUMNS:
            table.add_column(label, width=width, key=label or "mark")
        yield table

    def columns_for(self, width: int) -> list[tuple[str, int]]:
        """The columns shown at this pane width (a subset of COLUMNS, in order); the jobs
        pane gives the room to its LAST ERROR column."""
        return list(self.COLUMNS)

    def fit_columns(self, width: int) -> None:
        layout = self.columns_for(width)
        if layout == self._layout:
            return
        labels = [label for label, _ in self.COLUMNS]
        self._layout = layout
        self._keep = [labels.index(label) for label, _ in layout]
        table = self.table
        row = table.cursor_row
        table.clear(columns=True)
        table._shown.clear()
        for label, w in layout:
            table.add_column(label, width=w, key=label or "mark")
        table.show_rows([self.shown_cells(self.row(job)) for job in self.jobs])
        if self.jobs:
            table.move_cursor(row=min(row, len(self.jobs) - 1))

    def shown_cells(self, cells: tuple[Text, ...]) -> tuple[Text, ...]:
        return tuple(cells[i] for i in self._keep)

    @property
    def table(self) -> WindowTable:
        return self.query_one(WindowTable)

    def on_mount(self) -> None:
        self.update_title()

    def on_resize(self) -> None:
        self.fit_columns(self.size.width)
        # A taller or shorter terminal is a different window: fetch it.
        if self.loaded and self.display:
            self.console.request_poll()

    def focus_table(self) -> None:
        self.table.focus()

    def refresh_now(self) -> None:
        """Nothing to do: every poll fetches the window on show."""

    # --- polling ---------------------------------------------------------------------------------

    def page_size(self) -> int:
        height = self.table.size.height
        return max(1, height - 1) if height > 2 else 20  # minus the header row

    def filter(self) -> reads.JobFilter:
        s = self.state
        return reads.JobFilter(statuses=s.statuses, job_type=s.job_type,
                               search=s.search.strip() or None)

    def plan(self) -> Callable[[], WindowResult]:
        anchor = None
        if (not self._explicit and self.state.sort == "age" and not self.state.from_end
                and len(self.jobs) >= self.page_size()
                and (self.state.offset > 0 or self.table.cursor_row > 0)):
            # The operator is reading below the newest jobs of a list longer than the
            # screen: new arrivals pile up above ("N newer") instead of pushing the rows
            # they read down and off the screen. (A short list just grows; the cursor
            # follows its job.)
            anchor = self.jobs[0].id
        s = self.state
        if self._pending_bottom and s.sort in FROM_END_SORTS:
            s.from_end, s.end_offset, self._pending_bottom = True, 0, False
        window = Window(self.filter(), s.sort, s.offset, self.page_size(),
                        self._generation, to_bottom=self._pending_bottom, anchor_id=anchor,
                        from_end=s.from_end, end_offset=s.end_offset)
        self._pending_bottom = False
        self._explicit = False
        db = self.console.db
        annotate = self.annotate

        def fetch() -> WindowResult:
            w = window
            if w.from_end:
                total = reads.count_jobs(db, w.flt, cap=COUNT_CAP + 1)
                jobs = reads.list_jobs(db, w.flt, limit=w.page, offset=w.end_offset,
                                       sort=w.sort, from_end=True)
                if not jobs and w.end_offset > 0 and total > 0:
                    # Above the first row (jobs finished, a filter narrowed): the last
                    # page, which the end is.
                    w = replace(w, end_offset=0)
                    jobs = reads.list_jobs(db, w.flt, limit=w.page, sort=w.sort, from_end=True)
                capped = total > COUNT_CAP
                if capped:  # where the window starts is unknown: "of 100,000+"
                    return WindowResult(w, jobs, COUNT_CAP, True, annotate(db, jobs),
                                        position_known=False)
                w = replace(w, offset=max(0, total - w.end_offset - len(jobs)))
                return WindowResult(w, jobs, total, False, annotate(db, jobs))
            if w.to_bottom:
                total = reads.count_jobs(db, w.flt)  # exact: G is rare, and the index counts
                w = replace(w, offset=max(0, total - w.page))
                jobs = reads.list_jobs(db, w.flt, limit=w.page, offset=w.offset, sort=w.sort)
                return WindowResult(w, jobs, total, False, annotate(db, jobs))
            if w.anchor_id is not None:
                w = replace(w, offset=reads.count_jobs(db, w.flt, newer_than=w.anchor_id))
            total = reads.count_jobs(db, w.flt, cap=COUNT_CAP + 1)
            jobs = reads.list_jobs(db, w.flt, limit=w.page, offset=w.offset, sort=w.sort)
            if not jobs and w.offset > 0 and total > 0:
                # The window fell off the end (jobs finished, a filter narrowed): last page.
                exact = reads.count_jobs(db, w.flt)
                w = replace(w, offset=max(0, exact - w.page))
                jobs = reads.list_jobs(db, w.flt, limit=w.page, offset=w.offset, sort=w.sort)
            capped = total > COUNT_CAP
            if capped:  # at least this many; "+" on screen
                total = max(COUNT_CAP, w.offset + len(jobs))
            return WindowResult(w, jobs, total, capped, annotate(db, jobs))

        return fetch

    def apply(self, result: WindowResult) -> None:
        if result.window.generation != self._generation:
            return  # the operator moved or changed the query meanwhile; a new poll follows
        self.state.offset = result.window.offset
        self.state.end_offset = result.window.end_offset
        self.position_known = result.position_known
        self.jobs = result.jobs
        self.extra = result.extra
        self.total, self.capped = result.total, result.capped
        table = self.table
        previous_row = table.cursor_row
        table.show_rows([self.shown_cells(self.row(job)) for job in self.jobs])
        ids = [job.id for job in self.jobs]
        if self._want_row is not None:
            target = self._want_row if self._want_row >= 0 else len(ids) - 1
            self._want_row = None
        elif self._follow and self.selected_id in ids:
            target = ids.index(self.selected_id)
        else:
            target = min(max(previous_row, 0), max(0, len(ids) - 1))
        self._follow = True
        if ids:
            if target != table.cursor_row:
                table.move_cursor(row=target, animate=False)
            self.selected_id = ids[target]
        else:
            self.selected_id = None
        self.loaded = True
        self.update_title()

    # --- rendering -------------------------------------------------------------------------------

    def annotate(self, db: Database, jobs: list[Job]) -> Any:
        """Runs in the poll's thread: more about the rows in view (subclasses; no UI access,
        only what the pane captured when it was built)."""
        return None

    def mark_cell(self, job: Job) -> Text:
        # Shaped as cells.cell's are (no wrap, ellipsis): WindowTable renders those directly.
        if job.id in self.state.marked:
            return Text("●", style="bold yellow", no_wrap=True, overflow="ellipsis")
        return Text(" ", no_wrap=True, overflow="ellipsis")

    def row(self, job: Job) -> tuple[Text, ...]:
        raise NotImplementedError

    def update_title(self) -> None:
        s = self.state
        t = Text()
        t.append(self.TITLE, style="bold")
        t.append("  ")
        if not self.FIXED_STATUSES:
            t.append("status ", style="dim")
            t.append(",".join(s.statuses) or "all")
            t.append("  ")
        t.append("type ", style="dim")
        t.append(s.job_type or "all")
        t.append("  sort ", style="dim")
        t.append(s.sort)
        if s.search.strip():
            t.append("  search ", style="dim")
            t.append(clean(s.search, 40), style="bold")
        t.append("  ")
        if self.jobs and not self.position_known:
            # From the end of more rows than the count goes to: say where from the end.
            if s.end_offset:
                t.append(f"{s.end_offset + len(self.jobs):,}-{s.end_offset + 1:,} from the "
                         f"end of {self.total:,}+", style="dim")
            else:
                t.append(f"the last {len(self.jobs):,} of {self.total:,}+", style="dim")
            if s.sort == "age":
                t.append("  oldest (g: newest)", style="bold cyan")
        elif self.jobs:
            last = s.offset + len(self.jobs)
            total = f"{self.total:,}+" if self.capped else f"{self.total:,}"
            t.append(f"{s.offset + 1:,}-{last:,} of {total}", style="dim")
            if s.offset and s.sort == "age":
                t.append(f"  ↑ {s.offset:,} newer (g)", style="bold cyan")
        elif self.loaded:
            if s.search or s.job_type or s.statuses != self.FIXED_STATUSES:
                t.append("no jobs match (esc clears)", style="dim")
            else:
                t.append("no jobs yet: e enqueues one, `syncbridge demo` seeds the scenarios",
                         style="dim")
        if s.marked:
            t.append(f"  {len(s.marked)} marked", style="bold yellow")
        self.query_one("#list-title", Static).update(t)

    # --- events ----------------------------------------------------------------------------------

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if 0 <= event.cursor_row < len(self.jobs):
            self.selected_id = self.jobs[event.cursor_row].id

    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open_detail()

    @on(WindowTable.Scroll)
    def _scroll(self, event: WindowTable.Scroll) -> None:
        event.stop()
        page = self.page_size()
        s = self.state
        if event.to == "top":
            s.offset, s.from_end, s.end_offset = 0, False, 0
            self._want_row = 0
            self.table.move_cursor(row=0, animate=False)
        elif event.to == "bottom":
            self._pending_bottom = True
            self._want_row = -1
        elif s.from_end:
            if event.delta < 0 and len(self.jobs) < page:
                return  # the window is the first page already
            end = s.end_offset - event.delta
            if not self.capped:
                end = min(end, max(0, self.total - page))
            end = max(0, end)
            if end == s.end_offset:
                return
            s.end_offset = end
            if self.position_known:
                s.offset = max(0, self.total - end - len(self.jobs))
        else:
            if event.delta > 0 and len(self.jobs) < page:
                return  # the window is the last page already
            limit = self.total if not self.capped else s.offset + page + event.delta
            new = max(0, min(s.offset + event.delta, max(0, limit - page)))
            if new == s.offset:
                return
            s.offset = new
        self._follow = False  # the cursor stays on its screen row; the rows move under it
        self.requery(keep_offset=True)

    def requery(self, keep_offset: bool = False) -> None:
        self._generation += 1
        self._explicit = True
        if not keep_offset:
            self.state.offset = 0
            self.state.from_end, self.state.end_offset = False, 0
            self._follow = True
        self.update_title()
        self.console.request_poll()

    @on(Input.Changed, "#search")
    def _search_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.state.search = event.value
        self.state.offset = 0
        self.state.from_end, self.state.end_offset = False, 0
        self._generation += 1  # whatever is in flight was for the old text
        self._explicit = True
        self.update_title()
        # Debounced: "c", "c_", "c_5" would each be a query; only the pause after typing is.
        if self._search_timer is not None:
            self._search_timer.stop()
        self._search_timer = self.set_timer(SEARCH_DEBOUNCE, self.requery)

    @on(Input.Submitted, "#search")
    def _search_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if not event.value.strip():
            event.input.display = False
            event.input.disabled = True
        self.focus_table()

    # --- type-ahead into the search box ----------------------------------------------------------
    #
    # Widget.focus() only takes effect once the app has handled what is already in its queue,
    # so keys that arrive with `/` (tmux send-keys, a paste, a fast typist) are forwarded to
    # the table and would reach the list's bindings: `c` would open the cancel confirmation.
    # Every key reaches the table, then this list, in the order typed, and only then the
    # bindings (the app checks them last): `/` is acted on here, and the keys behind it are
    # held until the search box has focus, then typed again, in order, as if they came later.

    def on_key(self, event: events.Key) -> None:
        if self._typeahead is not None:
            self._typeahead.append(events.Key(event.key, event.character))
        elif self._is_search_key(event.key):
            self.action_start_search()
        else:
            return
        event.stop()
        event.prevent_default()

    def on_paste(self, event: events.Paste) -> None:
        if self._typeahead is not None:
            self._typeahead.append(events.Paste(event.text))
            event.stop()

    def _is_search_key(self, key: str) -> bool:
        """Would this key run this list's search binding (the keymap applied)?"""
        active = self.screen.active_bindings.get(key)
        return (active is not None and active.node is self
                and active.binding.id == "search" and active.enabled)

    def _replay_typeahead(self) -> None:
        held, self._typeahead = self._typeahead or [], None
        for event in held:
            # From the app, as the terminal's keys are: an event whose sender is this list
            # would stop bubbling here, before the bindings (enter, esc) see it.
            event.set_sender(self.app)
            self.app.post_message(event)

    # --- actions ---------------------------------------------------------------------------------

    def current_job(self) -> Job | None:
        row = self.table.cursor_row
        return self.jobs[row] if 0 <= row < len(self.jobs) else None

    def action_start_search(self) -> None:
        search = self.query_one("#search", Input)
        search.display = True
        search.disabled = False
        if search.has_focus or self._typeahead is not None:
            return
        self._typeahead = []
        search.focus()  # lands when the app gets to it

        def after_focus() -> None:
            # The keys forwarded to the table before the focus moved are in its queue;
            # they reach this list before this marker does, and are all held by then.
            self.table.call_later(self.call_later, self._replay_typeahead)

        self.app.call_later(after_focus)

    def action_clear(self) -> None:
        search = self.query_one("#search", Input)
        s = self.state
        if search.has_focus or s.search:
            search.value = ""
            search.display = False
            search.disabled = True
            s.search = ""
            self.focus_table()
        elif s.marked:
            s.marked.clear()
            self.show_marks()
        elif s.statuses != self.FIXED_STATUSES or s.job_type:
            s.statuses, s.job_type = self.FIXED_STATUSES, None
        else:
            return
        self.requery()

    def action_open_detail(self) -> None:
        job = self.current_job()
        if job is not None:
            self.console.open_detail(job.id)

    def action_toggle_mark(self) -> None:
        job = self.current_job()
        if job is None:
            return
        marked = self.state.marked
        if job.id in marked:
            del marked[job.id]
        else:
            marked[job.id] = job.status
        self.show_marks()
        self.table.action_cursor_down()

    def show_marks(self) -> None:
        table = self.table
        for i, job in enumerate(self.jobs):
            table.set_cell(i, 0, self.mark_cell(job))
        self.update_title()

    def action_mark_all(self) -> None:
        flt, sort, db = self.filter(), self.state.sort, self.console.db

        def fetch() -> list[int]:
            return job_ids(db, flt, sort=sort, limit=MARK_ALL_CAP)

        def done(ids: list[int]) -> None:
            for job_id in ids:
                self.state.marked.setdefault(job_id, None)
            self.show_marks()
            more = " (the first ones)" if len(ids) >= MARK_ALL_CAP else ""
            self.app.notify(f"marked {len(ids):,} jobs matching the filter{more}",
                            title="Marked")

        self.console.in_thread(fetch, done)

    def action_job_action(self, verb: str) -> None:
        s = self.state
        if s.marked:
            self.console.job_action(verb, dict(s.marked), on_done=self._after_action)
            return
        job = self.current_job()
        if job is None:
            self.app.notify("no job selected", severity="warning")
            return
        self.console.job_action(verb, {job.id: job.status}, on_done=self._after_action)

    def _after_action(self, done_ids: list[int]) -> None:
        for job_id in done_ids:
            self.state.marked.pop(job_id, None)
        self.show_marks()

    def action_job_logs(self) -> None:
        job = self.current_job()
        if job is not None:
            self.console.show_logs(job.id, job.correlation_id)

    def action_cycle_status(self) -> None:
        if self.FIXED_STATUSES:
            self.app.notify("this pane shows dead jobs only; filter by status in the jobs "
                            "pane (1)", severity="warning")
            return
        # Each status alone, then the two an operator asks for most: "in trouble" and
        # "in progress".
        cycle: list[tuple[str, ...]] = [(), *((st,) for st in STATUSES), ("failed", "dead"),
                                        ("pending", "running")]
        i = cycle.index(self.state.statuses) if self.state.statuses in cycle else 0
        self.state.statuses = cycle[(i + 1) % len(cycle)]
        self.requery()

    def action_cycle_type(self) -> None:
        cycle: list[str | None] = [None, *self.console.job_types()]
        i = cycle.index(self.state.job_type) if self.state.job_type in cycle else 0
        self.state.job_type = cycle[(i + 1) % len(cycle)]
        self.requery()

    def action_cycle_sort(self) -> None:
        i = SORT_ORDER.index(self.state.sort)
        self.state.sort = SORT_ORDER[(i + 1) % len(SORT_ORDER)]
        self.requery()

    def action_export(self) -> None:
        self.console.export_view(self.filter(), self.state.sort, self.TITLE.lower())

    def set_filters(self, **changes: Any) -> None:
        """Tests and the palette: change the query in one go."""
        for key, value in changes.items():
            setattr(self.state, key, value)
        self.requery()


class JobsPane(JobList):
    TITLE = "Jobs"
    COLUMNS = [("", 1), ("ID", 7), ("TYPE", 9), ("ENTITY", 18), ("STATUS", 9),
               ("ATTEMPTS", 9), ("NEXT RUN", 9), ("AGE", 10), ("CORRELATION", 13),
               ("FROM", 6), ("LAST ERROR", 20)]
    # Narrower terminals drop columns, least read first; ENTITY shrinks; LAST ERROR (what
    # an operator reads first) takes whatever is left, at least MIN_ERROR.
    NARROW = (("CORRELATION", "FROM"), ("AGE", "ATTEMPTS"))
    MIN_ERROR = 20

    def __init__(self, console: Console, *, id: str | None = None) -> None:
        super().__init__(console, id=id)
        # The app's job types -> upstreams; the fleet's recorded ones are added at each read.
        self._declared = console.upstream_scope().declared

    def annotate(self, db: Database, jobs: list[Job]) -> dict[int, str]:
        """Why the pending jobs in view are held back ("held: billing open"): the few
        upstream rows, read only when the window shows a pending job."""
        if not any(job.status == "pending" for job in jobs):
            return {}
        by_type = upstream_protection.fleet_type_upstreams(db, self._declared)
        return upstream_protection.hold_reasons(db, jobs, upstreams_by_type=by_type)

    def columns_for(self, width: int) -> list[tuple[str, int]]:
        usable = width - 2  # the vertical scrollbar
        narrow = {"ENTITY": 18, "ID": 7, "TYPE": 9, "STATUS": 9}
        dropped: set[str] = set()
        for step in (0, *range(1, len(self.NARROW) + 1)):
            dropped = {label for group in self.NARROW[:step] for label in group}
            if step:
                narrow = {"ENTITY": 14 if step == 1 else 12, "ID": 7 if step == 1 else 6,
                          "TYPE": 9 if step == 1 else 8, "STATUS": 9 if step == 1 else 8}
            cols = [(label, narrow.get(label, w)) for label, w in self.COLUMNS
                    if label not in dropped]
            room = usable - sum(w + 2 for label, w in cols if label != "LAST ERROR") - 2
            if room >= self.MIN_ERROR:
                break
        return [(label, max(room, self.MIN_ERROR) if label == "LAST ERROR" else w)
                for label, w in cols]

    def row(self, job: Job) -> tuple[Text, ...]:
        next_run = cell(until(job.next_run_at) if job.status == "pending" else "-")
        err_type = job.dead_error_type or job.last_error_type
        message = job.dead_error or job.last_error
        err = f"{err_type}: {message}" if err_type and message else err_type
        last = dash(err, "red" if job.status in ("failed", "dead") else "dim")
        held = (self.extra or {}).get(job.id)
        if held:
            # Held back by its upstream: why, first (the previous error after it).
            next_run = cell("held", "bold yellow")
            last = cell(f"{held} · {err}" if err else held, "yellow")
        return (self.mark_cell(job), cell(job.id), cell(job.job_type), cell(job.entity_id),
                status_cell(job.status), cell(f"{job.attempt_count}/{job.max_attempts}"),
                next_run, cell(ago(job.created_at)), cell(job.correlation_id[:12], "dim"),
                cell(f"↻{job.replay_of_job_id}" if job.is_replay else "", "cyan"), last)


class DeadLettersPane(JobList):
    TITLE = "Dead letters"
    FIXED_STATUSES = ("dead",)
    # Fits 140 columns with the table's cell padding; the detail has the whole message.
    COLUMNS = [("", 1), ("ID", 7), ("TYPE", 9), ("ENTITY", 16), ("DEAD ERROR", 20),
               ("MESSAGE", 31), ("ATTEMPTS", 8), ("AGE", 8), ("DIED", 8), ("REPLAYED", 8)]

    def annotate(self, db: Database, jobs: list[Job]) -> dict[int, int]:
        return latest_replays(db, [job.id for job in jobs])

    def row(self, job: Job) -> tuple[Text, ...]:
        replayed = (self.extra or {}).get(job.id)
        return (self.mark_cell(job), cell(job.id), cell(job.job_type), cell(job.entity_id),
                dash(job.dead_error_type, "bold magenta"), dash(job.dead_error),
                cell(f"{job.attempt_count}/{job.max_attempts}"), cell(ago(job.created_at)),
                cell(ago(job.finished_at)),
                cell(f"as {replayed}" if replayed else "-", "cyan" if replayed else "dim"))
