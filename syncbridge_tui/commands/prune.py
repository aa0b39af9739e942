"""`syncbridge prune`: core.retention's pruning by hand (the workers run it on their own).

    syncbridge prune                          # every retention the settings give
    syncbridge prune --older-than 30d --status success --status canceled
    syncbridge prune --dry-run                # counts only: exactly what prune would delete
    syncbridge prune --archive old.jsonl      # each job with its attempts, written first

Takes the same leader lease as the workers' pruner: when a worker is pruning right now it
says so (exit 1) instead of running beside it."""

from __future__ import annotations

import argparse
import json
import os
from typing import IO, Any

from core import retention
from syncbridge_tui.commands.common import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    open_db,
    print_json,
    settings_for,
)

KINDS = (*retention.PRUNABLE, retention.AUDIT)


def duration(text: str) -> float | None:
    """argparse type: a duration ("30d", "never"); a bad one is a one-line usage error."""
    try:
        return retention.parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("prune", parents=[common],
                       help="delete finished jobs (with attempts) and audit events past "
                            "their retention")
    p.add_argument("--older-than", type=duration, metavar="DURATION", default=argparse.SUPPRESS,
                   help="one age for every kind pruned (e.g. 30d, 12h; 'never' keeps all) "
                        "instead of the SYNCBRIDGE_RETENTION_* settings")
    p.add_argument("--status", action="append", choices=KINDS, metavar="KIND",
                   help=f"only these (repeatable): {', '.join(KINDS)}")
    p.add_argument("--dry-run", action="store_true",
                   help="delete nothing; print what prune would delete")
    p.add_argument("--archive", metavar="FILE.jsonl",
                   help="append what is deleted (each job with its attempts, audit events) "
                        "as JSON lines, written and fsynced before each batch is deleted")
    p.add_argument("--json", action="store_true")


class _Archive:
    def __init__(self, path: str) -> None:
        try:
            self.file: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise CliError(f"cannot write the archive {path}: {exc.strerror}",
                           EXIT_USAGE) from None

    def __call__(self, kind: str, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.file.write(json.dumps({"kind": kind, kind: row}, default=str,
                                       ensure_ascii=False) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())  # on disk before the batch's delete commits

    def close(self) -> None:
        self.file.close()


def _line(verb: str, c: retention.Counts) -> str:
    parts = ", ".join(f"{k} {v}" for k, v in sorted(c.by_status.items()))
    return (f"{verb} {c.jobs} jobs{f' ({parts})' if parts else ''}, {c.attempts} attempts, "
            f"{c.audit} audit events")


def cmd_prune(args: argparse.Namespace) -> int:
    if args.dry_run and args.archive:
        raise CliError("--archive writes what is deleted; --dry-run deletes nothing",
                       EXIT_USAGE)
    settings = settings_for(args)
    kinds = tuple(dict.fromkeys(args.status or KINDS))
    if hasattr(args, "older_than"):
        policy = retention.manual_policy(args.older_than, kinds)
    else:
        try:
            policy = retention.policy_from_settings(settings)
        except ValueError as exc:
            raise CliError(f"bad setting SYNCBRIDGE_RETENTION_PER_TYPE: {exc}",
                           EXIT_USAGE) from None
    db = open_db(settings)
    if args.dry_run:
        counts = retention.count_prunable(db, policy, statuses=kinds)
        print_json({"dry_run": True, **counts.to_dict()}) if args.json else print(
            _line("would prune", counts))
        return EXIT_OK
    archive = _Archive(args.archive) if args.archive else None
    from core import logging as sblog

    # prune.batch / prune.done go to SYNCBRIDGE_LOG_FILE when set; the terminal gets the sum.
    sblog.configure(level=settings.log_level, log_file=settings.log_file,
                    quiet=not settings.log_file)
    try:
        result = retention.prune(db, policy, owner=f"cli:{os.getpid()}", statuses=kinds,
                                 archive=archive)
    finally:
        if archive is not None:
            archive.close()
    if not result.leader:
        raise CliError("another pruner (a worker) is running right now; try again shortly")
    if args.json:
        print_json({"dry_run": False, **result.counts.to_dict(), "batches": result.batches,
                    "seconds": round(result.seconds, 3)})
    else:
        print(_line("pruned", result.counts) + f" in {result.batches} batches, "
              f"{result.seconds:.2f}s")
    return EXIT_OK
