"""Subcommands about jobs: enqueue, jobs (the list), show, retry, cancel, replay."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from core import clock, enqueue, errors, operator_actions, reads
from core.db import Database
from core.records import Job
from syncbridge_tui.commands.common import (
    EXIT_DUPLICATE,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    app_for,
    open_db,
    print_json,
    settings_for,
    table,
)
from syncbridge_tui.text import ago, clean, ms, until


def cmd_enqueue(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    registry = app_for(settings)
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
    run_at = _run_at(args)
    try:
        enqueue.validate_job_type(args.job_type, registry.names())
        for entity in ids:
            enqueue.validate_entity_id(entity)
    except errors.InvalidInput as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    db = open_db(settings)
    try:
        results = enqueue.enqueue_many(db, args.job_type, ids, known_types=registry.names(),
                                     max_attempts=registry.max_attempts(args.job_type, settings),
                                     payload=payload,
                                     correlation_id=args.correlation_id, run_at=run_at)
    except errors.InvalidInput as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    if len(results) == 1:
        r = results[0]
        job = reads.get_job(db, r.job_id)
        if not r.created:
            print(f"syncbridge: duplicate: an active {args.job_type} job for "
                  f"{clean(r.entity_id)!r} already exists: job {r.job_id}", file=sys.stderr)
            print(json.dumps({"existing_job_id": r.job_id, "created": False}))
            return EXIT_DUPLICATE
        assert job is not None
        print_json(job.to_dict())
        return EXIT_OK
    # An id given twice is one job; count jobs, not lines.
    created = len({r.job_id for r in results if r.created})
    dupes = len({r.job_id for r in results if not r.created})
    print(json.dumps({"created": created, "duplicates": dupes,
                      "jobs": [{"entity_id": r.entity_id, "job_id": r.job_id,
                                "created": r.created} for r in results]}))
    return EXIT_DUPLICATE if created == 0 else EXIT_OK


def _run_at(args: argparse.Namespace) -> float | None:
    """--in DURATION / --at TIME -> epoch seconds (None: now); the past is refused."""
    from core import schedules

    try:
        if args.run_in is not None:
            return clock.now() + schedules.parse_duration(args.run_in)
        if args.run_at is not None:
            at = schedules.parse_instant(args.run_at)
            if at < clock.now():
                raise errors.InvalidInput(f"--at {args.run_at} is in the past")
            return at
    except errors.InvalidInput as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    return None


def _job_line(job: Job, held: dict[int, str] | None = None) -> list[str]:
    next_run = until(job.next_run_at) if job.status == "pending" else "-"
    if held and job.id in held:
        next_run = held[job.id]  # e.g. "held: billing open" (core.upstream_protection)
    return [str(job.id), job.job_type, clean(job.entity_id, 24), job.status,
            f"{job.attempt_count}/{job.max_attempts}", next_run,
            ago(job.created_at), job.correlation_id[:12]]


def _held(db: Database, jobs: list[Job]) -> dict[int, str]:
    from core import upstream_protection  # reads what the workers recorded: no app needed

    return upstream_protection.hold_reasons(db, jobs)


def cmd_jobs(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    # Only a named app is loaded (a bad one is one line, exit 2): listing needs no job
    # types, and the demo app would import the HTTP client (and with it rich).
    known = app_for(settings).names() if settings.app else None
    if known is not None and args.job_type is not None and args.job_type not in known:
        print(f"syncbridge: note: {clean(args.job_type)!r} is not a job type of this app "
              f"(known: {', '.join(known)})", file=sys.stderr)
    db = open_db(settings)
    flt = reads.JobFilter(statuses=tuple(args.status or ()), job_type=args.job_type,
                          search=args.search)
    jobs = reads.list_jobs(db, flt, limit=args.limit)
    held = _held(db, jobs)
    if args.json:
        print_json([{**j.to_dict(), "held": held.get(j.id)} for j in jobs])
    else:
        print(table(["ID", "TYPE", "ENTITY", "STATUS", "ATTEMPTS", "NEXT RUN", "AGE",
                     "CORRELATION"], [_job_line(j, held) for j in jobs]))
    return EXIT_OK


def _get(db: Database, job_id: int) -> Job:
    job = reads.get_job(db, job_id)
    if job is None:
        raise CliError(f"job {job_id} not found")
    return job


def cmd_show(args: argparse.Namespace) -> int:
    db = open_db(settings_for(args))
    job = _get(db, args.job_id)
    attempts = reads.attempts_for(db, job.id)
    replays = reads.replays_of(db, job.id)
    if args.json:
        print_json({**job.to_dict(), "replayed_as": replays,
                    "attempts": [a.to_dict() for a in attempts]})
        return EXIT_OK
    print(f"job {job.id}  {job.job_type} {clean(job.entity_id)}  {job.status}  "
          f"attempts {job.attempt_count}/{job.max_attempts}")
    print(f"  correlation {job.correlation_id}  created {ago(job.created_at)}")
    if job.status == "pending":
        print(f"  next run {until(job.next_run_at)} ({clock.iso(job.next_run_at)})")
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
        print(table(["#", "WORKER", "STARTED", "DURATION", "OUTCOME", "ERROR", "HTTP",
                     "MESSAGE"],
                    [[str(a.number), clean(a.worker_id, 30), ago(a.started_at),
                      ms(a.duration_ms), a.outcome, a.error_type or "-",
                      str(a.http_status or "-"), clean(a.error_message, 60) or "-"]
                     for a in attempts]))
    return EXIT_OK


def _control(fn: Callable[[], str]) -> int:
    try:
        print(fn())
    except errors.ControlError as exc:  # JobNotFound included
        raise CliError(str(exc)) from None
    except errors.DuplicateJob as exc:
        raise CliError(str(exc), EXIT_DUPLICATE) from None
    return EXIT_OK


def cmd_retry(args: argparse.Namespace) -> int:
    db = open_db(settings_for(args))

    def go() -> str:
        operator_actions.retry(db, args.job_id)
        return f"job {args.job_id} queued again"

    return _control(go)


def cmd_cancel(args: argparse.Namespace) -> int:
    db = open_db(settings_for(args))

    def go() -> str:
        was = operator_actions.cancel(db, args.job_id)
        return f"job {args.job_id} canceled (was {was})"

    return _control(go)


def cmd_replay(args: argparse.Namespace) -> int:
    db = open_db(settings_for(args))

    def go() -> str:
        new_id = operator_actions.replay(db, args.job_id, attempt_number=args.attempt)
        return f"job {args.job_id} replayed as job {new_id}"

    return _control(go)
