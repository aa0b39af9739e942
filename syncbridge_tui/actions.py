"""The operator's actions on jobs: retry / replay / cancel (confirmed first, refusals
explained, the outcome reported in a toast), on upstreams: pause / resume / reset / open
(the same), enqueue and export, and the read-only guard.

Handed what it needs by the console app (syncbridge_tui.app); the database work runs in
the console's threads (`in_thread`), never on the UI loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.text import Text
from textual.app import App
from textual.notifications import SeverityLevel

from core import clock, enqueue, operator_actions, reads
from core import upstream_protection as up
from core.db import Database
from syncbridge_tui.context import InThread, UpstreamScope
from syncbridge_tui.engine import EmbeddedWorker
from syncbridge_tui.job_export import export_jobs
from syncbridge_tui.screens.confirm import ConfirmScreen
from syncbridge_tui.screens.enqueue import EnqueueScreen
from syncbridge_tui.screens.export import ExportScreen
from syncbridge_tui.screens.pause import PauseScreen
from syncbridge_tui.text import clean, span, until

ALLOWED_FROM = {"retry": operator_actions.RETRYABLE_FROM,
                "replay": operator_actions.REPLAYABLE_FROM,
                "cancel": operator_actions.CANCELABLE_FROM}
PAST = {"retry": "retried", "replay": "replayed", "cancel": "canceled"}


def explain(verb: str, job_id: int | None) -> str:
    """What the action does, for its confirmation (one job, or each of many with None)."""
    which = f"job {job_id}" if job_id is not None else "each job"
    if verb == "replay" and job_id is None:
        return ("Each gets a new pending job linked to it; the originals and their "
                "attempts stay as they are.")
    if verb == "replay":
        return (f"A new pending job is created, linked to job {job_id}; job {job_id} and "
                "its attempts stay as they are.")
    if verb == "retry":
        return (f"{which.capitalize()} goes back to pending with a fresh retry budget; "
                "its attempt history is kept.")
    return (f"{which.capitalize()} is canceled; if it is running, its worker stops it "
            "and its late result is discarded.")


UPSTREAM_WHAT = {"pause": "pausing an upstream", "resume": "resuming an upstream",
                 "reset": "closing an upstream's breaker",
                 "open": "opening an upstream's breaker"}


def upstream_refusal(verb: str, s: up.UpstreamState) -> str | None:
    """Why `verb` makes no sense in state `s` (None: it does)."""
    name, breaker = clean(s.name, 40), s.breaker.replace("_", "-")
    if verb == "resume" and s.paused_until is None:
        return f"{name} is not paused (its breaker is {breaker}); nothing to resume"
    if verb == "reset" and (s.breaker == up.CLOSED and not s.failures
                            and s.paused_until is None
                            and (s.configured_rate is not None or s.current_rate is None)):
        return (f"{name}'s breaker is closed already, with no failures counted, no pause "
                "and no adaptive rate; nothing to reset")
    if verb == "open" and s.breaker == up.OPEN:
        return (f"{name}'s breaker is open already (next probe {until(s.next_probe_at)}); "
                "c closes it")
    return None


def left(ts: float | None) -> str:
    """How long until `ts`: "4m12s"."""
    return "-" if ts is None else span(max(0.0, ts - clock.now()))


def upstream_explain(verb: str, s: up.UpstreamState, actor: str, cooldown: float) -> Text:
    name = clean(s.name, 40)
    body = Text()
    if verb == "pause":
        body.append(f"Every job calling {name} stays pending, fleet-wide (no attempt opened, "
                    "no retry budget spent), until the pause ends or someone resumes it (u). "
                    f"{s.waiting} waiting now.")
        if s.paused_until is not None:
            body.append(f"\nIt is paused already ({left(s.paused_until)} left): the new "
                        "pause replaces that one.", style="bold yellow")
    elif verb == "resume":
        body.append(f"The pause on {name} ({left(s.paused_until)} left) is lifted: its "
                    f"{s.waiting} waiting jobs may be claimed again at once.")
        if s.breaker != up.CLOSED:
            body.append(f"\nIts breaker stays {s.breaker.replace('_', '-')}.",
                        style="bold yellow")
    elif verb == "reset":
        body.append(f"The breaker of {name} closes: its failures, any pause and any adaptive "
                    "rate are forgotten, and every worker sends it traffic again at once, "
                    "without a probe first.")
    else:
        body.append(f"The breaker of {name} opens: every job calling it is held (pending, "
                    f"no attempt spent), fleet-wide; after the cool-down ({cooldown:g}s) one "
                    "probe job tests it, and its result closes or reopens the breaker.")
    body.append(f"\nRecorded in the audit log as {clean(actor, 40)}.", style="dim")
    return body


@dataclass(frozen=True, slots=True)
class UpstreamOutcome:
    done: bool
    message: str
    state: up.UpstreamState | None = None


class OperatorActions:
    def __init__(self, app: App[int], db: Database, *, engine: EmbeddedWorker | None,
                 read_only: bool, blink: bool, in_thread: InThread,
                 request_poll: Callable[[], None], open_detail: Callable[[int], None],
                 showing_detail: Callable[[], bool],
                 job_types: Callable[[], list[str]] | None = None,
                 upstreams: UpstreamScope | None = None, actor: str | None = None) -> None:
        self._app = app  # for its dialogs (push_screen) and toasts (notify)
        self.db = db
        self.engine = engine
        self.read_only = read_only
        self.blink = blink
        self.in_thread = in_thread
        self.request_poll = request_poll
        self.open_detail = open_detail
        self.showing_detail = showing_detail  # a job's detail on show: replay hints at `n`
        self.job_types = job_types or (lambda: [])
        self.upstreams = upstreams or UpstreamScope()
        self.actor = actor  # the upstream controls' audit actor; None: the OS user

    def refuse_if_read_only(self, what: str) -> bool:
        if self.read_only:
            self._app.notify(f"{what} is disabled: this console is read-only (--read-only)",
                            title="Read-only", severity="warning")
            return True
        return False

    # --- retry / replay / cancel -----------------------------------------------------------------

    def job_action(self, verb: str, targets: dict[int, str | None],
                   on_done: Callable[[list[int]], None]) -> None:
        """retry / replay / cancel the given jobs, after a confirmation. `targets` maps job
        ids to the status the console last saw (None: unknown)."""
        if self.refuse_if_read_only(verb):
            return
        allowed = ALLOWED_FROM[verb]
        need = " or ".join(allowed)
        bad = {i: s for i, s in targets.items() if s is not None and s not in allowed}
        ids = list(targets)
        if len(ids) == 1 and bad:
            job_id, status = next(iter(bad.items()))
            self._app.notify(f"job {job_id} is {status}; only {need} jobs can be {PAST[verb]}",
                            title=f"Cannot {verb}", severity="warning")
            return
        body = Text()
        if len(ids) == 1:
            title = f"{verb.capitalize()} job {ids[0]}?"
            body.append(explain(verb, ids[0]))
        else:
            title = f"{verb.capitalize()} {len(ids)} jobs?"
            body.append(f"{len(ids)} marked jobs. ")
            body.append(explain(verb, None))
            if bad:
                body.append(f"\n{len(bad)} of them are not {need} and will be refused.",
                            style="bold yellow")

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._run(verb, ids, on_done)

        self._app.push_screen(ConfirmScreen(title, body, verb.capitalize()), callback=confirmed)

    def _run(self, verb: str, ids: list[int], on_done: Callable[[list[int]], None]) -> None:
        db, engine = self.db, self.engine

        def work() -> operator_actions.BulkOutcome:
            return operator_actions.bulk(db, verb, ids)

        def done(out: operator_actions.BulkOutcome) -> None:
            if verb == "cancel" and engine is not None:
                for job_id in out.done:
                    engine.cancel_local(job_id)
            self.report(verb, ids, out)
            on_done(list(out.done))
            self.request_poll()

        self.in_thread(work, done)

    def report(self, verb: str, ids: list[int], out: operator_actions.BulkOutcome) -> None:
        notify = self._app.notify
        if len(ids) == 1:
            job_id = ids[0]
            if job_id in out.refused:
                notify(clean(out.refused[job_id], 300), title=f"Cannot {verb}",
                       severity="warning", timeout=8)
            elif verb == "replay":
                hint = " (n opens it)" if self.showing_detail() else ""
                notify(f"job {job_id} replayed as job {out.done[job_id]}{hint}",
                       title="Replayed")
            elif verb == "retry":
                notify(f"job {job_id} retried: pending again with a fresh budget",
                       title="Retried")
            else:
                notify(f"job {job_id} canceled", title="Canceled")
            return
        parts = []
        if out.done:
            parts.append(f"{len(out.done)} {PAST[verb]}")
            if verb == "replay":
                new = [str(i) for i in out.done.values() if i is not None]
                shown = ", ".join(new[:6]) + (", …" if len(new) > 6 else "")
                parts[-1] += f" as new jobs {shown}"
        if out.refused:
            first = next(iter(out.refused.values()))
            more = f" (and {len(out.refused) - 1} more)" if len(out.refused) > 1 else ""
            parts.append(f"{len(out.refused)} refused: {first}{more}")
        severity: SeverityLevel = "warning" if out.refused else "information"
        notify(clean("; ".join(parts), 400), title=f"{verb.capitalize()}: {len(ids)} jobs",
               severity=severity, timeout=10 if out.refused else 5)

    # --- pause / resume / reset / open an upstream ---------------------------------------------

    def upstream_action(self, verb: str, seen: up.UpstreamState | None,
                        on_done: Callable[[], None]) -> None:
        """Confirmed first (pause: for how long); refused with the reason when the state the
        console showed makes no sense for it, and again if it changed before the write."""
        if self.refuse_if_read_only(UPSTREAM_WHAT[verb]):
            return
        if seen is None:
            self._app.notify("no upstream selected (none known yet: a worker records them "
                             "when it starts)", severity="warning")
            return
        refusal = upstream_refusal(verb, seen)
        name = clean(seen.name, 40)
        if refusal is not None:
            self._app.notify(refusal, title=f"Cannot {verb} {name}", severity="warning")
            return
        actor = self.actor or operator_actions.current_actor()
        cooldown = self.upstreams.policy.cooldown_seconds
        body = upstream_explain(verb, seen, actor, cooldown)

        if verb == "pause":
            def chosen(seconds: float | None) -> None:
                if seconds is not None:
                    self._run_upstream(verb, seen.name, actor, seconds, on_done)

            self._app.push_screen(PauseScreen(f"Pause upstream {name}?", body,
                                              blink=self.blink), callback=chosen)
            return
        titles = {"resume": f"Resume upstream {name}?",
                  "reset": f"Close the breaker of {name}?",
                  "open": f"Open the breaker of {name}?"}
        labels = {"resume": "Resume", "reset": "Close breaker", "open": "Open breaker"}

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._run_upstream(verb, seen.name, actor, None, on_done)

        self._app.push_screen(ConfirmScreen(titles[verb], body, labels[verb]),
                              callback=confirmed)

    def _run_upstream(self, verb: str, name: str, actor: str, seconds: float | None,
                      on_done: Callable[[], None]) -> None:
        db, scope = self.db, self.upstreams

        def work() -> UpstreamOutcome:
            by_type = up.fleet_type_upstreams(db, scope.declared)
            now = {s.name: s for s in up.states(db, policy=scope.policy,
                                                 upstreams_by_type=by_type)}
            current = now.get(name)
            shown = clean(name, 40)
            if current is None:
                names = ", ".join(sorted(now)) or "none"
                return UpstreamOutcome(False, f"unknown upstream {shown!r} (known: {names})")
            refusal = upstream_refusal(verb, current)
            if refusal is not None:  # it changed between the screen and the answer
                return UpstreamOutcome(False, f"it changed meanwhile: {refusal}", current)
            known, cooldown, declared = list(now), scope.policy.cooldown_seconds, scope.declared
            try:
                if verb == "pause":
                    assert seconds is not None
                    up.pause(db, name, seconds, actor=actor, known=known, cooldown=cooldown,
                             by_type=declared)
                    return UpstreamOutcome(True, f"{shown} paused for {span(seconds)}: jobs "
                                           "calling it stay pending, fleet-wide (u resumes)")
                if verb == "resume":
                    up.resume(db, name, actor=actor, known=known, cooldown=cooldown,
                              by_type=declared)
                    return UpstreamOutcome(True, f"{shown} resumed: its jobs may be claimed "
                                           "again")
                if verb == "reset":
                    up.reset(db, name, actor=actor, known=known, cooldown=cooldown,
                             by_type=declared)
                    return UpstreamOutcome(True, f"{shown}'s breaker closed: failures, pause "
                                           "and adaptive rate forgotten")
                up.open_breaker(db, name, actor=actor, known=known, cooldown=cooldown,
                                by_type=declared)
                return UpstreamOutcome(True, f"{shown}'s breaker opened: its jobs are held; "
                                       f"one probe after {cooldown:g}s")
            except up.UnknownUpstream as exc:
                return UpstreamOutcome(False, str(exc))

        titles = {"pause": "Upstream paused", "resume": "Upstream resumed",
                  "reset": "Breaker closed", "open": "Breaker opened"}

        def done(out: UpstreamOutcome) -> None:
            if out.done:
                self._app.notify(clean(out.message, 300), title=titles[verb])
            else:
                self._app.notify(clean(out.message, 300), title=f"Cannot {verb} "
                                 f"{clean(name, 40)}", severity="warning", timeout=8)
            on_done()
            self.request_poll()

        self.in_thread(work, done)

    # --- enqueue and export ----------------------------------------------------------------------

    def enqueue(self, submit: Callable[[str, str], enqueue.EnqueueResult]) -> None:
        """The enqueue form; the job it names (new, or the active duplicate) opens after."""
        if self.refuse_if_read_only("enqueue"):
            return

        def opened(job_id: int | None) -> None:
            self.request_poll()
            if job_id is not None:
                self.open_detail(job_id)

        self._app.push_screen(EnqueueScreen(self.job_types(), submit=submit,
                                           in_thread=self.in_thread,
                                           refuse_if_read_only=self.refuse_if_read_only,
                                           blink=self.blink), callback=opened)

    def export_view(self, flt: reads.JobFilter, sort: str, what: str) -> None:
        stamp = datetime.fromtimestamp(clock.now(), UTC).strftime("%Y%m%d-%H%M%S")
        name = what.replace(" ", "-")
        desc = Text(f"{what}: ", style="bold")
        desc.append(clean(f"status {','.join(flt.statuses) or 'all'}, type "
                          f"{flt.job_type or 'all'}, search {flt.search or '-'}, sort {sort}"))
        db = self.db

        def exported(n: int, path: str) -> None:
            self._app.notify(f"exported {n:,} jobs to {path}", title="Exported")

        def chosen(path: str | None) -> None:
            if path is None:
                return
            self.in_thread(lambda: export_jobs(db, flt, sort, Path(path).expanduser()),
                           lambda n: exported(n, path))

        self._app.push_screen(ExportScreen(f"syncbridge-{name}-{stamp}.csv", desc,
                                          blink=self.blink), callback=chosen)
