"""`syncbridge`: the console (default), the headless worker, and scripting subcommands.

Exit codes: 0 ok, 1 runtime error, 2 usage error, 3 duplicate (an active job exists).
Every error is one line on stderr; no traceback reaches the user.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from core import control, metrics, queue
from core.config import Settings, SettingsError, load_settings
from core.db import Database, DatabaseError
from core.handlers import registry
from core.integrations.mock import SCENARIOS
from core.records import Job
from syncbridge_tui import serve_command
from syncbridge_tui.text import ago, clean, ms, pct, until

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_DUPLICATE = 0, 1, 2, 3


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_RUNTIME) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit 2)."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see '{self.prog} --help')", EXIT_USAGE)


def _job_id(text: str) -> int:
    if not text.isdigit() or len(text) > 18:
        raise argparse.ArgumentTypeError(f"job id must be a positive whole number, not {text!r}")
    return int(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1 or len(text) > 6:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, not {text!r}")
    return int(text)


def build_parser() -> _Parser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", metavar="URL", default=argparse.SUPPRESS,
                        help="database URL (overrides SYNCBRIDGE_DATABASE_URL)")
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
                   help="console: do not seed the demo scenarios into an empty database")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    e = sub.add_parser("enqueue", parents=[common], help="enqueue jobs (idempotent)")
    e.add_argument("job_type", metavar="TYPE", help="job type: " + ", ".join(registry.names()))
    e.add_argument("entity_ids", metavar="ENTITY_ID", nargs="*")
    e.add_argument("--from-file", metavar="PATH",
                   help="read entity ids, one a line ('-' for standard input)")
    e.add_argument("--payload", metavar="JSON", help="a JSON object handed to the handler")
    e.add_argument("--correlation-id", metavar="ID")

    j = sub.add_parser("jobs", parents=[common], help="list jobs, newest first")
    j.add_argument("--status", action="append", choices=("pending", "running", "success",
                                                          "failed", "dead", "canceled"))
    j.add_argument("--type", dest="job_type")
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
    sub.add_parser("demo", parents=[common], help="enqueue every demo scenario")
    mu = sub.add_parser("mock-upstream", parents=[common],
                        help="serve the demo CRM and Billing over HTTP on 127.0.0.1")
    mu.add_argument("--port", type=int, default=8700)
    dbp = sub.add_parser("db", parents=[common], help="database maintenance")
    dbsub = dbp.add_subparsers(dest="db_command", metavar="ACTION", parser_class=_Parser)
    dbsub.add_parser("upgrade", parents=[common], help="upgrade the schema to the newest")
    serve_command.register(p, sub, common)  # `serve` and --metrics-port (HTTP API, issue 12)
    return p


# --- commands ---------------------------------------------------------------------------------

def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    return load_settings(database_url=getattr(args, "db", None), **extra)


_opened: list[Database] = []


def _open(settings: Settings) -> Database:
    from core.runtime import open_database

    db = open_database(settings)
    _opened.append(db)  # closed when the command ends (main's finally)
    return db


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def cmd_enqueue(args: argparse.Namespace) -> int:
    settings = _settings(args)
    ids = list(args.entity_ids)
    if args.from_file:
        try:
            handle = (sys.stdin if args.from_file == "-"
                      else open(args.from_file, encoding="utf-8"))  # noqa: SIM115
            with handle:
                ids += [line.rstrip("\r\n") for line in handle if line.strip()]
        except OSError as exc:
            raise CliError(f"cannot read {args.from_file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise CliError(f"{args.from_file} is not UTF-8 text") from None
    if not ids:
        raise CliError("give at least one ENTITY_ID (or --from-file)", EXIT_USAGE)
    payload = None
    if args.payload is not None:
        try:
            payload = json.loads(args.payload)
        except ValueError:
            raise CliError("--payload is not valid JSON", EXIT_USAGE) from None
        if not isinstance(payload, dict):
            raise CliError("--payload must be a JSON object", EXIT_USAGE)
    # Validate before touching the database, so bad input never needs a connection.
    try:
        queue.validate_job_type(args.job_type, registry.names())
        for entity in ids:
            queue.validate_entity_id(entity)
    except queue.InvalidInput as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    db = _open(settings)
    try:
        results = queue.enqueue_many(db, args.job_type, ids, known_types=registry.names(),
                                     max_attempts=settings.max_attempts, payload=payload,
                                     correlation_id=args.correlation_id)
    except queue.InvalidInput as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    if len(results) == 1:
        r = results[0]
        job = queue.get_job(db, r.job_id)
        if not r.created:
            print(f"syncbridge: duplicate: an active {args.job_type} job for "
                  f"{clean(r.entity_id)!r} already exists: job {r.job_id}", file=sys.stderr)
            print(json.dumps({"existing_job_id": r.job_id, "created": False}))
            return EXIT_DUPLICATE
        assert job is not None
        _print_json(job.to_dict())
        return EXIT_OK
    # An id given twice is one job; count jobs, not lines.
    created = len({r.job_id for r in results if r.created})
    dupes = len({r.job_id for r in results if not r.created})
    print(json.dumps({"created": created, "duplicates": dupes,
                      "jobs": [{"entity_id": r.entity_id, "job_id": r.job_id,
                                "created": r.created} for r in results]}))
    return EXIT_DUPLICATE if created == 0 else EXIT_OK


def _job_line(job: Job) -> list[str]:
    return [str(job.id), job.job_type, clean(job.entity_id, 24), job.status,
            f"{job.attempt_count}/{job.max_attempts}",
            until(job.next_run_at) if job.status == "pending" else "-",
            ago(job.created_at), job.correlation_id[:12]]


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*headers), *(fmt.format(*r) for r in rows)])


def cmd_jobs(args: argparse.Namespace) -> int:
    db = _open(_settings(args))
    flt = queue.JobFilter(statuses=tuple(args.status or ()), job_type=args.job_type,
                          search=args.search)
    jobs = queue.list_jobs(db, flt, limit=args.limit)
    if args.json:
        _print_json([j.to_dict() for j in jobs])
    else:
        print(_table(["ID", "TYPE", "ENTITY", "STATUS", "ATTEMPTS", "NEXT RUN", "AGE",
                      "CORRELATION"], [_job_line(j) for j in jobs]))
    return EXIT_OK


def _get(db: Database, job_id: int) -> Job:
    job = queue.get_job(db, job_id)
    if job is None:
        raise CliError(f"job {job_id} not found")
    return job


def cmd_show(args: argparse.Namespace) -> int:
    db = _open(_settings(args))
    job = _get(db, args.job_id)
    attempts = queue.attempts_for(db, job.id)
    replays = queue.replays_of(db, job.id)
    if args.json:
        _print_json({**job.to_dict(), "replayed_as": replays,
                     "attempts": [a.to_dict() for a in attempts]})
        return EXIT_OK
    print(f"job {job.id}  {job.job_type} {clean(job.entity_id)}  {job.status}  "
          f"attempts {job.attempt_count}/{job.max_attempts}")
    print(f"  correlation {job.correlation_id}  created {ago(job.created_at)}")
    if job.status == "pending":
        print(f"  next run {until(job.next_run_at)}")
    if job.lease_owner:
        print(f"  lease {job.lease_owner} (token {job.lease_token}) "
              f"expires {until(job.lease_expires_at)}")
    if job.last_error:
        print(f"  last error {job.last_error_type}: {clean(job.last_error)}")
    if job.dead_error:
        print(f"  dead: {job.dead_error_type}: {clean(job.dead_error)}")
    if job.is_replay:
        print(f"  replay of job {job.replay_of_job_id} (attempt id {job.replay_of_attempt_id})")
    if replays:
        print(f"  replayed as job {', '.join(map(str, replays))}")
    if attempts:
        print()
        print(_table(["#", "WORKER", "STARTED", "DURATION", "OUTCOME", "ERROR", "HTTP",
                      "MESSAGE"],
                     [[str(a.number), clean(a.worker_id, 30), ago(a.started_at),
                       ms(a.duration_ms), a.outcome, a.error_type or "-",
                       str(a.http_status or "-"), clean(a.error_message, 60) or "-"]
                      for a in attempts]))
    return EXIT_OK


def _control(fn: Callable[[], str]) -> int:
    try:
        print(fn())
    except control.ControlError as exc:  # JobNotFound included
        raise CliError(str(exc)) from None
    except queue.DuplicateJob as exc:
        raise CliError(str(exc), EXIT_DUPLICATE) from None
    return EXIT_OK


def cmd_retry(args: argparse.Namespace) -> int:
    db = _open(_settings(args))

    def go() -> str:
        control.retry(db, args.job_id)
        return f"job {args.job_id} queued again"

    return _control(go)


def cmd_cancel(args: argparse.Namespace) -> int:
    db = _open(_settings(args))

    def go() -> str:
        was = control.cancel(db, args.job_id)
        return f"job {args.job_id} canceled (was {was})"

    return _control(go)


def cmd_replay(args: argparse.Namespace) -> int:
    db = _open(_settings(args))

    def go() -> str:
        new_id = control.replay(db, args.job_id, attempt_number=args.attempt)
        return f"job {args.job_id} replayed as job {new_id}"

    return _control(go)


def cmd_metrics(args: argparse.Namespace) -> int:
    db = _open(_settings(args))
    m = metrics.collect(db)
    if args.json:
        _print_json(m.to_dict())
        return EXIT_OK
    rows = []
    for name, t in (("all", m.overall), *m.per_type.items()):
        s = t.by_status
        rows.append([name, str(t.total_jobs), str(s["pending"]), str(s["running"]),
                     str(s["success"]), str(s["failed"]), str(s["dead"]), str(s["canceled"]),
                     pct(t.success_rate), str(t.retry_count), ms(t.avg_execution_ms),
                     ms(t.p50_execution_ms), ms(t.p95_execution_ms), str(t.due_depth),
                     "-" if t.oldest_due_age_s is None else f"{t.oldest_due_age_s:.1f}s",
                     str(t.finished_last_minute)])
    print(_table(["TYPE", "TOTAL", "PENDING", "RUNNING", "SUCCESS", "FAILED", "DEAD",
                  "CANCELED", "SUCCESS%", "RETRIES", "AVG", "P50", "P95", "DUE",
                  "OLDEST DUE", "DONE/MIN"], rows))
    return EXIT_OK


def cmd_workers(args: argparse.Namespace) -> int:
    db = _open(_settings(args))
    workers = queue.list_workers(db)
    if args.json:
        _print_json([w.to_dict() for w in workers])
        return EXIT_OK
    print(_table(["WORKER", "STATE", "PID", "STARTED", "LAST SEEN", "IN FLIGHT", "PROCESSED"],
                 [[clean(w.id), w.state, str(w.pid), ago(w.started_at), ago(w.last_seen_at),
                   str(w.in_flight), str(w.processed)] for w in workers]))
    return EXIT_OK


def seed_demo(db: Database, settings: Settings) -> list[tuple[str, str, int, bool]]:
    out = []
    for job_type, entity, _expected, _what in SCENARIOS:
        r = queue.enqueue(db, job_type, entity, known_types=registry.names(),
                          max_attempts=settings.max_attempts)
        out.append((job_type, entity, r.job_id, r.created))
    return out


def cmd_demo(args: argparse.Namespace) -> int:
    settings = _settings(args)
    db = _open(settings)
    for job_type, entity, job_id, created in seed_demo(db, settings):
        expected = next(s[2] for s in SCENARIOS if s[1] == entity)
        state = "enqueued as" if created else "already active as"
        print(f"{job_type:<8} {entity:<10} {state} job {job_id} (expected: {expected})")
    return EXIT_OK


def cmd_mock_upstream(args: argparse.Namespace) -> int:
    from core.integrations.mock import MockUpstream

    if not 0 <= args.port <= 65535:
        raise CliError("--port must be between 0 and 65535", EXIT_USAGE)
    try:
        server = MockUpstream().serve(port=args.port)
    except OSError as exc:
        raise CliError(f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror}") from None
    host, port = server.server_address[:2]
    print(f"mock upstream on http://{host}:{port}", flush=True)
    print(f"export SYNCBRIDGE_CRM_URL=http://{host}:{port}/crm", flush=True)
    print(f"export SYNCBRIDGE_BILLING_URL=http://{host}:{port}/billing", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return EXIT_OK


def cmd_db(args: argparse.Namespace) -> int:
    if args.db_command != "upgrade":
        raise CliError("say 'syncbridge db upgrade'", EXIT_USAGE)
    from core.migrations import head_revision, upgrade
    from core.runtime import open_database

    settings = _settings(args)
    db = open_database(settings, migrate=False)
    ran = upgrade(db)
    print(f"database {db.display_url} {'upgraded to' if ran else 'already at'} "
          f"revision {head_revision()}")
    return EXIT_OK


def run_worker(args: argparse.Namespace) -> int:
    from core import logging as sblog
    from core.worker import Worker

    settings = _settings(args, concurrency=args.concurrency)
    sblog.configure(level=settings.log_level, log_file=settings.log_file)
    db = _open(settings)
    worker = Worker(db, settings)
    if args.metrics_port is not None:
        serve_command.attach_worker_metrics(worker, args.metrics_port)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        signals = 0

        def on_signal() -> None:
            nonlocal signals
            signals += 1
            # A second signal means "now": in-flight work is released instead of awaited.
            worker.request_stop(force=signals > 1)

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        await worker.run(until_empty=args.until_empty)

    asyncio.run(main())
    return EXIT_OK


def run_console(args: argparse.Namespace) -> int:
    from syncbridge_tui.app import run_app

    return run_app(args, _settings(args, concurrency=args.concurrency))


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "enqueue": cmd_enqueue, "jobs": cmd_jobs, "show": cmd_show, "retry": cmd_retry,
    "cancel": cmd_cancel, "replay": cmd_replay, "metrics": cmd_metrics,
    "workers": cmd_workers, "demo": cmd_demo, "mock-upstream": cmd_mock_upstream,
    "db": cmd_db, "serve": serve_command.cmd_serve,
}


def main(argv: Sequence[str] | None = None) -> int:
    try:
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
        while _opened:
            _opened.pop().dispose()


def _fail(message: str) -> None:
    print(f"syncbridge: error: {clean(message)}", file=sys.stderr)


def entry() -> NoReturn:
    sys.exit(main())


if __name__ == "__main__":
    entry()
