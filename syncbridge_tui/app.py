"""The SyncBridge console: a Textual App over core, with the worker embedded.

Built by `create_app(settings, options)`, so tests and the screenshot command build it with
a fixed clock, no cursor blink, no live timers and no worker; `run_app` is what the
`syncbridge` command runs.

Threads: every database read and write the console makes runs in a Textual thread worker
(`in_thread`, `request_poll`), never on the UI loop. The poll is single-flight: while one
runs, further requests only mark it dirty, and one more poll follows when it finishes.
"""

from __future__ import annotations

import argparse
import gc
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from textual.app import App, SystemCommand
from textual.screen import ModalScreen, Screen

from core import clock, enqueue, reads
from core import logging as sblog
from core import upstream_protection as up
from core.config import Settings, SettingsError
from core.db import Database
from core.handlers import Registry
from core.reads import finished_since
from core.schedules import Schedule
from syncbridge_tui import keymap
from syncbridge_tui.actions import OperatorActions
from syncbridge_tui.context import UpstreamScope
from syncbridge_tui.engine import EmbeddedWorker, LogBuffer
from syncbridge_tui.live import LiveScreen, LiveView
from syncbridge_tui.screens.detail import DetailScreen
from syncbridge_tui.screens.help import HelpScreen
from syncbridge_tui.screens.main import MainScreen
from syncbridge_tui.text import clean
from syncbridge_tui.widgets.header import HeaderInfo, StatusHeader
from syncbridge_tui.widgets.job_list import JobList
from syncbridge_tui.widgets.upstreams_pane import UpstreamsPane

T = TypeVar("T")

JOBS_PER_SECOND_WINDOW = 10.0


@dataclass(slots=True)
class ConsoleOptions:
    read_only: bool = False
    embedded_worker: bool = True  # off with --no-worker, and always when read-only
    live: bool = True  # the 1 s refresh timer; tests poll explicitly instead
    refresh_seconds: float = 1.0
    clock: Callable[[], float] | None = None  # core.clock's seam: fixed in tests/screenshots
    blink: bool = True
    keymap: dict[str, str] | None = None  # None: read the user's keymap file
    concurrency: int | None = None
    configure_logging: bool = True
    worker_kwargs: dict[str, Any] = field(default_factory=dict)  # core Worker's: registry=, mock=
    # The app whose job types the console lists and enqueues; None: worker_kwargs' registry,
    # else the one the settings name (SYNCBRIDGE_APP / --app; none: the demo app).
    registry: Registry | None = None
    # Run once the console is up (the demo seed), so the operator sees the jobs arrive.
    seed: Callable[[], int] | None = None
    # The recurring schedules the workers pane shows; None: the registry's (core.schedules).
    schedules: list[Schedule] | None = None
    # Who the upstream controls are audited as; None: the OS user (core's current_actor).
    # Fixed in the showcase, whose screens name it.
    actor: str | None = None


@dataclass(slots=True)
class PollResult:
    data: object  # what the live view's plan fetched, for its apply
    jobs_per_second: float | None
    error: str | None


def quiet_collector() -> None:
    """Every frame allocates thousands of short-lived objects (segments, strips, styles)
    over a large heap of long-lived ones (Textual's DOM and caches, the imported modules).
    With the default thresholds a collection of the oldest generation walked all of it
    every few frames: pauses long enough to feel in the middle of a key press on a big
    queue.
    What is alive once the console is on screen is frozen out of the collector's reach,
    and the young generations are collected less often (cycles are still collected)."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


class SyncBridgeApp(App[int]):
    CSS_PATH = "syncbridge.tcss"
    TITLE = "SyncBridge"
    BINDINGS = keymap.bindings(keymap.GLOBAL)
    # ctrl+p: Textual's palette, with every console action added (get_system_commands).
    ENABLE_COMMAND_PALETTE = True

    def __init__(self, settings: Settings, db: Database, options: ConsoleOptions,
                 keymap_overrides: dict[str, str], keymap_error: str | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.db = db
        self.options = options
        self.read_only = options.read_only
        self.keymap_overrides = keymap_overrides
        self.keymap_error = keymap_error
        self.log_buffer = LogBuffer()
        registry = options.registry or options.worker_kwargs.get("registry")
        if registry is None:
            from core.app_loading import load_app

            registry = load_app(settings.app, demo=settings.demo)
        self.registry: Registry = registry
        self.engine: EmbeddedWorker | None = None
        if options.embedded_worker and not options.read_only:
            self.engine = EmbeddedWorker(db, settings, concurrency=options.concurrency,
                                         log_sink=self.log_buffer.extend,
                                         **options.worker_kwargs)
        self.frozen = False
        self.poll_count = 0
        self._polling = False
        self._poll_again = False
        self._quitting = False
        self._engine_launched = False
        self._last_jobs_per_second = 0.0
        self._last_error: str | None = None
        self._unsubscribe_log: Callable[[], None] | None = None
        self.upstream_error: str | None = None
        self._upstreams = self._upstream_scope()
        self.actions = OperatorActions(
            self, db, engine=self.engine, read_only=self.read_only, blink=options.blink,
            in_thread=self.in_thread, request_poll=self.request_poll,
            open_detail=self.open_detail,
            showing_detail=lambda: isinstance(self.screen, DetailScreen),
            job_types=self.job_types, upstreams=self._upstreams, actor=options.actor)

    def job_types(self) -> list[str]:
        return self.registry.names()

    def _upstream_scope(self) -> UpstreamScope:
        declared = up.type_upstreams(self.registry)
        try:
            policy = up.Policy.from_settings(self.settings)
        except SettingsError as exc:  # the worker refuses it too; the pane still shows states
            self.upstream_error = f"{exc} (the upstreams pane shows no configured limits)"
            policy = up.Policy()
        return UpstreamScope(policy, {t: ups for t, ups in declared.items() if ups})

    def upstream_scope(self) -> UpstreamScope:
        return self._upstreams

    def schedules(self) -> list[Schedule]:
        if self.options.schedules is not None:
            return self.options.schedules
        return self.registry.schedules()

    # --- lifecycle -------------------------------------------------------------------------------

    def on_mount(self) -> None:
        if self.keymap_overrides:
            self.set_keymap(self.keymap_overrides)
        self._unsubscribe_log = sblog.add_sink(self.log_buffer)
        self.push_screen(MainScreen(self))
        if self.options.live:
            self.set_interval(self.options.refresh_seconds, self._tick, name="refresh")
            self.set_interval(0.5, self.drain_log, name="log")
            # Process-wide, so only for a console that runs for real (tests keep the
            # interpreter's defaults).
            self.call_after_refresh(quiet_collector)
        if self.keymap_error:
            self.notify(self.keymap_error + " (using the default keys)", severity="error",
                        timeout=10)
        if self.upstream_error:
            self.notify(self.upstream_error, severity="error", timeout=10)
        self.call_after_refresh(self.request_poll)
        if self.options.seed is not None:
            self.set_timer(0.5, self._seed)

    def _seed(self) -> None:
        assert self.options.seed is not None

        def seeded(n: int) -> None:
            paced = "mock" in self.options.worker_kwargs
            self.notify(f"seeded {n} demo jobs into the empty database (--no-demo skips "
                        "this)" + ("; the demo upstream answers in 0.2-0.8 s so you can "
                                   "watch them run" if paced else ""), title="Demo",
                        timeout=8)
            self.request_poll()

        self.in_thread(self.options.seed, seeded)

    def _run_engine(self) -> None:
        """Supervise the worker's child process until it exits (see engine.py)."""
        assert self.engine is not None
        self.engine.run_blocking()
        if self.engine.error is not None and not self._quitting:
            self._call_back(self._worker_ended, self.engine.error)

    def _worker_ended(self, error: BaseException) -> None:
        self.notify(clean(str(error), 300) or type(error).__name__,
                    title="The embedded worker stopped", severity="error", timeout=15)
        self.update_header()

    def on_unmount(self) -> None:
        # Whatever path ends the app, the worker is told to stop; run_app waits for it.
        if self.engine is not None:
            self.engine.request_stop()
        if self._unsubscribe_log is not None:
            self._unsubscribe_log()

    # --- threads ---------------------------------------------------------------------------------

    def in_thread(self, fn: Callable[[], T], done: Callable[[T], None],
                  on_error: Callable[[BaseException], None] | None = None) -> None:
        """Run `fn` (database work) in a thread; `done`/`on_error` run back on the UI loop."""

        def body() -> None:
            try:
                result = fn()
            except Exception as exc:  # shown to the operator as one line
                self._call_back(on_error or self._show_error, exc)
                return
            self._call_back(done, result)

        self.run_worker(body, thread=True, group="db", exit_on_error=False)

    def _call_back(self, fn: Callable[[T], None], value: T) -> None:
        try:
            self.call_from_thread(fn, value)
        except RuntimeError:
            pass  # the app is shutting down; nobody is left to tell

    def _show_error(self, exc: BaseException) -> None:
        self.notify(clean(str(exc), 300) or type(exc).__name__, title="Error",
                    severity="error", timeout=8)

    # --- polling ---------------------------------------------------------------------------------

    def base_screen(self) -> Screen[Any]:
        """The screen under any modals: what is on show and what the poll refreshes."""
        stack: list[Screen[Any]] = list(self.screen_stack)
        for screen in reversed(stack):
            if not isinstance(screen, ModalScreen):
                base: Screen[Any] = screen
                return base
        current: Screen[Any] = self.screen
        return current

    def main_screen(self) -> MainScreen | None:
        for screen in self.screen_stack:
            if isinstance(screen, MainScreen):
                return screen
        return None

    def _tick(self) -> None:
        if not self.frozen:
            self.request_poll()

    def request_poll(self) -> None:
        """Refresh what is on show, from a thread; never two polls at once."""
        if self._polling:
            self._poll_again = True
            return
        screen = self.base_screen()
        target = screen.live_target() if isinstance(screen, LiveScreen) else None
        fetch = target.plan() if target is not None else None
        db, engine = self.db, self.engine
        self._polling = True

        def body() -> None:
            data, rate, error = None, None, None
            try:
                if fetch is not None:
                    data = fetch()
                if engine is None:
                    since = clock.now() - JOBS_PER_SECOND_WINDOW
                    rate = finished_since(db, since) / JOBS_PER_SECOND_WINDOW
            except Exception as exc:  # the database went away: say so, keep polling
                error = f"database error: {clean(str(exc), 120)}"
            self._call_back(lambda r: self._poll_done(target, r), PollResult(data, rate, error))

        self.run_worker(body, thread=True, group="poll", exit_on_error=False)

    def _poll_done(self, target: LiveView[Any] | None, result: PollResult) -> None:
        self._polling = False
        self.poll_count += 1
        if self.engine is not None and not self._engine_launched and not self._quitting:
            self._engine_launched = True
            # After the first frame's data: the child's start-up (a new interpreter importing
            # core) would otherwise compete with it for the machine.
            self.run_worker(self._run_engine, thread=True, group="engine",
                            name="embedded-worker", exit_on_error=False)
        self._last_error = result.error
        if result.jobs_per_second is not None:
            self._last_jobs_per_second = result.jobs_per_second
        if result.error is None and target is not None and target.is_attached:
            target.apply(result.data)
        self.drain_log()
        self.update_header()
        if self._poll_again:
            self._poll_again = False
            self.request_poll()

    def drain_log(self) -> None:
        main = self.main_screen()
        if main is None or main.pane != "log":
            return  # a hidden pane would wrap at the wrong width; it re-reads when shown
        log = main.log_pane
        log.feed(self.log_buffer.since(log.last_seq))

    def header_info(self) -> HeaderInfo:
        engine = self.engine
        if engine is None:
            state, note = "off", ("read-only" if self.read_only else "--no-worker")
            concurrency = None
            rate = self._last_jobs_per_second
        else:
            state, note = engine.state, ""
            if engine.error is not None:
                note = clean(str(engine.error), 60)
            concurrency = engine.concurrency
            rate = engine.throughput()
        main = self.main_screen()
        base = self.base_screen()
        pane = main.pane if main is not None and base is main else "detail"
        if isinstance(base, DetailScreen):
            pane = f"job {base.job_id}"
        return HeaderInfo(self.db.display_url, state, concurrency, rate, self.read_only,
                          self.frozen, pane, self._last_error, note)

    def update_header(self) -> None:
        info = self.header_info()
        for header in self.base_screen().query(StatusHeader):
            header.show(info)

    # --- navigation ------------------------------------------------------------------------------

    def _to_main(self) -> MainScreen:
        while not isinstance(self.screen, MainScreen) and len(self.screen_stack) > 1:
            self.pop_screen()
        main = self.main_screen()
        assert main is not None
        return main

    def action_switch_pane(self, pane: str) -> None:
        self._to_main().switch(pane)
        self.update_header()
        self.request_poll()

    def open_detail(self, job_id: int) -> None:
        self.push_screen(DetailScreen(self, job_id))
        self.call_after_refresh(self.request_poll)

    def show_logs(self, job_id: int, correlation_id: str) -> None:
        main = self._to_main()
        log = main.log_pane
        log.job_id, log.correlation_id = job_id, correlation_id
        main.switch("log")  # re-reads the buffer, filtered, once laid out
        self.update_header()
        if self.engine is None:
            self.notify("the log pane shows this console's embedded worker; with workers "
                        "elsewhere, job lines are in their logs (correlation "
                        f"{correlation_id[:12]})", severity="warning", timeout=8)

    def action_show_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.keymap_overrides, self.read_only))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Inside a dialog the console's single keys mean nothing (y/n/q belong to it);
        # only ctrl+c / ctrl+q quit from there.
        if isinstance(self.screen, ModalScreen) and action != "interrupt":
            return action not in {k.action.split("(")[0] for k in keymap.GLOBAL}
        return True

    def action_interrupt(self) -> None:
        self.action_quit_console()

    async def action_quit(self) -> None:
        # Textual's own "Quit" (palette, ctrl+q) must stop the worker gracefully too.
        self.action_quit_console()

    # --- the embedded worker ---------------------------------------------------------------------

    def action_toggle_worker(self) -> None:
        if self.actions.refuse_if_read_only("pausing the worker"):
            return
        if self.engine is None:
            self.notify("no embedded worker: the console was started with --no-worker "
                        "(workers elsewhere drain the queue)", severity="warning")
            return
        state = self.engine.toggle_pause()
        self.notify("worker resumed" if state == "running"
                    else "worker paused: it claims nothing until you press w again "
                         "(jobs it runs now finish)", title="Worker")
        self.update_header()

    def action_toggle_freeze(self) -> None:
        self.frozen = not self.frozen
        self.notify("live refresh frozen (f resumes)" if self.frozen
                    else "live refresh resumed", title="Refresh")
        self.update_header()
        if not self.frozen:
            self.request_poll()

    def action_quit_console(self) -> None:
        engine = self.engine
        if self._quitting:
            if engine is not None:
                engine.request_stop(force=True)
            return
        self._quitting = True
        if engine is None or not engine.started or engine.done.is_set():
            if engine is not None:
                engine.request_stop()
            self.exit(0)
            return
        self.notify("stopping the worker: finishing in-flight jobs (q again releases "
                    "them now)", title="Quitting", timeout=30)
        engine.request_stop()
        limit = self.settings.shutdown_timeout_seconds + 10

        def wait() -> None:
            engine.done.wait(limit)
            self._call_back(lambda _: self.exit(0), None)

        self.run_worker(wait, thread=True, group="quit", exit_on_error=False)

    # --- operator actions (syncbridge_tui.actions) ---------------------------------------------

    def job_action(self, verb: str, targets: dict[int, str | None],
                   on_done: Callable[[list[int]], None]) -> None:
        self.actions.job_action(verb, targets, on_done)

    def export_view(self, flt: reads.JobFilter, sort: str, what: str) -> None:
        self.actions.export_view(flt, sort, what)

    def upstream_action(self, verb: str, seen: up.UpstreamState | None,
                        on_done: Callable[[], None]) -> None:
        self.actions.upstream_action(verb, seen, on_done)

    def enqueue_one(self, job_type: str, entity_id: str) -> enqueue.EnqueueResult:
        return enqueue.enqueue(self.db, job_type, entity_id, known_types=self.registry.names(),
                               max_attempts=self.registry.max_attempts(job_type, self.settings))

    def action_enqueue(self) -> None:
        self.actions.enqueue(self.enqueue_one)

    # --- the command palette ---------------------------------------------------------------------

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        seen: set[str] = set()
        for key in keymap.GLOBAL + keymap.LIST + keymap.DETAIL + keymap.UPSTREAMS:
            if key.action in seen or key.id in ("interrupt", "clear", "back"):
                continue
            seen.add(key.action)
            shown = keymap.effective_key(key, self.keymap_overrides)
            yield SystemCommand(f"{key.description} ({shown})", key.help,
                                lambda k=key: self._palette_run(k))

    def _palette_run(self, key: keymap.Key) -> None:
        if key.group == "global":
            self.call_later(self.run_action, key.action)
            return
        screen = self.base_screen()
        if key.group == "upstreams":
            pane = screen.active_pane() if isinstance(screen, MainScreen) else None
            if not isinstance(pane, UpstreamsPane):
                self.notify(f"{key.description}: works in the upstreams pane (6), on the "
                            "upstream under the cursor", severity="warning")
                return
            self.call_later(self.run_action, key.action, pane)
            return
        target: DetailScreen | JobList | None = None
        if isinstance(screen, DetailScreen):
            target = screen if key.group == "detail" else None
            if target is None and key.action.startswith(("job_action", "job_logs")):
                target = screen
        elif isinstance(screen, MainScreen) and key.group == "list":
            target = screen.job_list()
        if target is None:
            self.notify(f"{key.description}: works in the jobs and dead-letter panes or a "
                        "job's detail", severity="warning")
            return
        self.call_later(self.run_action, key.action, target)


def create_app(settings: Settings, options: ConsoleOptions | None = None, *,
               db: Database | None = None) -> SyncBridgeApp:
    """Build the console. Tests pass a fixed clock, live=False, embedded_worker=False."""
    options = options or ConsoleOptions()
    if options.clock is not None:
        clock.set_clock(options.clock)
    if options.configure_logging:
        # With a screen in use, logs go to SYNCBRIDGE_LOG_FILE or nowhere, never the terminal.
        sblog.configure(level=settings.log_level, log_file=settings.log_file, quiet=True)
    if db is None:
        from core.runtime import open_database

        db = open_database(settings)
    overrides, error = options.keymap, None
    if overrides is None:
        try:
            overrides = keymap.load_keymap()
        except keymap.KeymapError as exc:
            overrides, error = {}, str(exc)
    return SyncBridgeApp(settings, db, options, overrides, error)


def run_app(args: argparse.Namespace, settings: Settings,
            registry: Registry | None = None) -> int:
    """`syncbridge` without a command: open the database, seed the demo (in demo mode), run
    the console."""
    from core.runtime import open_database
    from syncbridge_tui.demo import seed_demo

    db = open_database(settings)
    try:
        seed = None
        worker_kwargs: dict[str, Any] = {}
        if (settings.demo and not args.read_only and not args.no_demo
                and reads.count_jobs(db, cap=1) == 0):
            def seed() -> int:
                return len(seed_demo(db, settings))

            if settings.crm_url is None and settings.billing_url is None:
                # A first run on the demo: let the operator watch jobs run (see module).
                from syncbridge_tui.demo_upstream import PacedMockUpstream

                worker_kwargs["mock"] = PacedMockUpstream()
        app = create_app(settings, ConsoleOptions(
            read_only=args.read_only, embedded_worker=not args.no_worker,
            concurrency=args.concurrency, seed=seed, worker_kwargs=worker_kwargs,
            registry=registry), db=db)
        try:
            app.run()
        finally:
            # However the app ended, the worker stops cleanly before we return.
            if app.engine is not None:
                app.engine.stop(settings.shutdown_timeout_seconds + 10)
        # Textual sets return_code to 1 when the app crashed (and printed why).
        return int(app.return_code or 0)
    finally:
        db.dispose()
