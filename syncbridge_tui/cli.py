"""`syncbridge`: the console (default), the headless worker, and scripting subcommands.

Exit codes: 0 ok, 1 runtime error, 2 usage error, 3 duplicate (an active job exists).
Every error is one line on stderr; no traceback reaches the user.

Textual-free: this module and syncbridge_tui.commands import neither textual nor rich
(tests/test_cli_imports.py checks), so scripting commands and the headless worker start
fast. The console is imported in one place, run_console, when it opens.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from core.config import SettingsError, load_settings
from core.db import DatabaseError
from syncbridge_tui import serve_command
from syncbridge_tui.commands import admin, check, health, jobs, prune, upstreams
from syncbridge_tui.commands.common import (
    EXIT_OK,
    EXIT_RUNTIME,
    EXIT_USAGE,
    CliError,
    app_for,
    close_opened,
    settings_for,
)
from syncbridge_tui.commands.worker import run_worker
from syncbridge_tui.text import clean

# The job types are the app's (--app, else the demo's), which imports the user's code and
# the HTTP client: only a help text that shows them (`syncbridge enqueue --help`) loads it.
JOB_TYPES_HELP = "job type: (the app's job types)"
_help_argv: list[str] = []


def _job_types_help() -> str:
    app, demo = None, False
    for n, word in enumerate(_help_argv):
        if word == "--app" and n + 1 < len(_help_argv):
            app = _help_argv[n + 1]
        elif word.startswith("--app="):
            app = word.split("=", 1)[1]
        elif word == "--demo":
            demo = True
    try:
        settings = load_settings(app=app, demo=True if demo else None)
        return "job type: " + ", ".join(app_for(settings).names())
    except SettingsError as exc:
        return f"job type (the app could not be loaded: {exc})"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit 2)."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see '{self.prog} --help')", EXIT_USAGE)

    def format_help(self) -> str:
        for action in self._actions:
            if action.help == JOB_TYPES_HELP:
                action.help = _job_types_help()
        return super().format_help()


def _job_id(text: str) -> int:
    if not text.isdigit() or len(text) > 18:
        raise argparse.ArgumentTypeError(f"job id must be a positive whole number, not {text!r}")
    return int(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1 or len(text) > 6:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, not {text!r}")
    return int(text)


def build_parser() -> _Parser:
    common = _Parser(add_help=False)
    common.add_argument("--db", metavar="URL", default=argparse.SUPPRESS,
                        help="database URL (overrides SYNCBRIDGE_DATABASE_URL)")
    common.add_argument("--app", metavar="MODULE[:ATTR]", default=argparse.SUPPRESS,
                        help="your job types: import MODULE (from the current directory or "
                             "installed); ATTR names a Registry or a function returning one "
                             "(overrides SYNCBRIDGE_APP; none: the demo app)")
    common.add_argument("--demo", action="store_true", default=argparse.SUPPRESS,
                        help="demo mode: upstreams without a URL are answered by the "
                             "in-process mock; the console seeds the demo scenarios")
    p = _Parser(prog="syncbridge", parents=[common],
                description="SyncBridge: reliable CRM -> Billing sync jobs. "
                            "Without a command, opens the operations console.")
    p.add_argument("--worker-only", action="store_true", help="run the headless worker")
    p.add_argument("--concurrency", type=_positive, help="jobs run at once by the worker")
    p.add_argument("--until-empty", action="store_true",
                   help="with --worker-only: exit once nothing is pending or running")
    p.add_argument("--no-worker", action="store_true",
                   help="console only: attach to a database that workers elsewhere drain")
    p.add_argument("--read-only", action="store_true",
                   help="console with every mutating action disabled")
    p.add_argument("--no-demo", action="store_true",
                   help="console in demo mode: do not seed the demo scenarios")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    e = sub.add_parser("enqueue", parents=[common], help="enqueue jobs (idempotent)")
    e.add_argument("job_type", metavar="TYPE", help=JOB_TYPES_HELP)
    e.add_argument("entity_ids", metavar="ENTITY_ID", nargs="*")
    e.add_argument("--from-file", metavar="PATH",
                   help="read entity ids, one a line ('-' for standard input)")
    e.add_argument("--payload", metavar="JSON", help="a JSON object handed to the handler")
    e.add_argument("--correlation-id", metavar="ID")
    when = e.add_mutually_exclusive_group()
    when.add_argument("--in", dest="run_in", metavar="DURATION",
                      help="run later: 30s, 10m, 2h, 1d from now")
    when.add_argument("--at", dest="run_at", metavar="TIME",
                      help="run at an ISO 8601 time with a zone, e.g. 2026-12-02T09:00:00Z")

    j = sub.add_parser("jobs", parents=[common], help="list jobs, newest first")
    j.add_argument("--status", action="append", choices=("pending", "running", "success",
                                                          "failed", "dead", "canceled"))
    j.add_argument("--type", dest="job_type", help=JOB_TYPES_HELP)
    j.add_argument("--search", help="entity id, job id or correlation id (prefix)")
    j.add_argument("--limit", type=_positive, default=50)
    j.add_argument("--json", action="store_true")

    s = sub.add_parser("show", parents=[common], help="one job with its attempts")
    s.add_argument("job_id", type=_job_id, metavar="ID")
    s.add_argument("--json", action="store_true")

    for name, what in (("retry", "put a failed/dead job back in the queue"),
                       ("cancel", "cancel a pending/running job")):
        c = sub.add_parser(name, parents=[common], help=what)
        c.add_argument("job_id", type=_job_id, metavar="ID")
    r = sub.add_parser("replay", parents=[common], help="re-run a failed/dead job as a new job")
    r.add_argument("job_id", type=_job_id, metavar="ID")
    r.add_argument("--attempt", type=_positive, metavar="N", help="the attempt to replay from")

    m = sub.add_parser("metrics", parents=[common], help="queue health")
    m.add_argument("--json", action="store_true")
    w = sub.add_parser("workers", parents=[common], help="workers with a heartbeat")
    w.add_argument("--json", action="store_true")
    sc = sub.add_parser("schedules", parents=[common],
                        help="recurring schedules: next slot, last slot's job")
    sc.add_argument("--json", action="store_true")
    sub.add_parser("demo", parents=[common], help="enqueue every demo scenario")
    check.register(sub, common)
    mu = sub.add_parser("mock-upstream", parents=[common],
                        help="serve the demo CRM and Billing over HTTP on 127.0.0.1")
    mu.add_argument("--port", type=int, default=8700)
    dbp = sub.add_parser("db", parents=[common], help="database maintenance")
    dbsub = dbp.add_subparsers(dest="db_command", metavar="ACTION", parser_class=_Parser)
    dbsub.add_parser("upgrade", parents=[common], help="upgrade the schema to the newest")
    serve_command.register(p, sub, common)  # `serve` and the worker's --metrics-port
    prune.register(sub, common)
    upstreams.register(sub, common)  # `upstreams`, `upstream pause|resume|reset|open`
    return p


def run_console(args: argparse.Namespace) -> int:
    settings = settings_for(args, concurrency=args.concurrency)
    registry = app_for(settings)
    if not args.no_worker and not args.read_only:
        from core.integrations.clients import resolve_upstreams

        resolve_upstreams(registry, settings)  # the embedded worker would refuse: say so now
    from syncbridge_tui.app import run_app  # the one place the console (Textual) is imported

    return run_app(args, settings, registry)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "enqueue": jobs.cmd_enqueue, "jobs": jobs.cmd_jobs, "show": jobs.cmd_show,
    "retry": jobs.cmd_retry, "cancel": jobs.cmd_cancel, "replay": jobs.cmd_replay,
    "metrics": health.cmd_metrics, "workers": health.cmd_workers, "demo": admin.cmd_demo,
    "schedules": health.cmd_schedules,
    "mock-upstream": admin.cmd_mock_upstream, "db": admin.cmd_db,
    "serve": serve_command.cmd_serve, "check": check.cmd_check, "prune": prune.cmd_prune,
    "upstreams": upstreams.cmd_upstreams, "upstream": upstreams.cmd_upstream,
}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        _help_argv[:] = list(sys.argv[1:] if argv is None else argv)
        args = build_parser().parse_args(argv)
        if args.command:
            return COMMANDS[args.command](args)
        if args.worker_only:
            return run_worker(args)
        if args.until_empty:
            raise CliError("--until-empty goes with --worker-only", EXIT_USAGE)
        return run_console(args)
    except CliError as exc:
        _fail(str(exc))
        return exc.code
    except SettingsError as exc:
        _fail(str(exc))
        return EXIT_USAGE
    except DatabaseError as exc:
        _fail(str(exc))
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:
        # The last line of defence: a bug still gets one readable line, and the traceback
        # only on request.
        if os.environ.get("SYNCBRIDGE_DEBUG"):
            raise
        _fail(f"unexpected {type(exc).__name__}: {exc} (set SYNCBRIDGE_DEBUG=1 for details)")
        return EXIT_RUNTIME
    finally:
        close_opened()


def _fail(message: str) -> None:
    print(f"syncbridge: error: {clean(message)}", file=sys.stderr)


def entry() -> NoReturn:
    sys.exit(main())


if __name__ == "__main__":
    entry()
