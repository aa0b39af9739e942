"""Subcommands about the queue's health: metrics, workers and recurring schedules."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from syncbridge_tui.commands.common import (
    EXIT_OK,
    app_for,
    open_db,
    print_json,
    settings_for,
    table,
)
from syncbridge_tui.text import ago, clean, ms, pct, until

if TYPE_CHECKING:
    from core.metrics import Metrics

# core.metrics and core.heartbeats are imported by the commands that read them: the
# command line imports this module for every command.


def cmd_metrics(args: argparse.Namespace) -> int:
    from core import metrics

    settings = settings_for(args)
    registry = app_for(settings)
    db = open_db(settings)
    m = metrics.collect(db, registry.names())
    if args.json:
        print_json(m.to_dict())
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
    print(table(["TYPE", "TOTAL", "PENDING", "RUNNING", "SUCCESS", "FAILED", "DEAD",
                 "CANCELED", "SUCCESS%", "RETRIES", "AVG", "P50", "P95", "DUE",
                 "OLDEST DUE", "DONE/MIN"], rows))
    print()
    print(retention_line(m))  # after a blank line: the table above stays a table
    if m.upstreams:  # upstream protection (core.upstream_protection)
        print()
        print(table(["UPSTREAM", "STATE", "IN FLIGHT", "WAITING", "429s", "5xx"],
                    [[clean(u.name), u.state.replace("_", "-"), str(u.in_flight),
                      str(u.waiting), str(u.recent_429), str(u.recent_5xx)]
                     for u in m.upstreams]))
    return EXIT_OK


def retention_line(m: Metrics) -> str:
    """The pruner's figures in one line (the CLI and the console's metrics pane)."""
    r = m.retention
    if r.last_run_at is None:
        return "retention: never pruned"
    return (f"retention: last prune {ago(r.last_run_at)}: {r.last_jobs} jobs, "
            f"{r.last_attempts} attempts, {r.last_audit} audit events; total {r.total_jobs} "
            f"jobs, {r.total_attempts} attempts, {r.total_audit} audit events"
            + (f"; pruning now ({clean(r.owner)})" if r.owner else ""))


def cmd_workers(args: argparse.Namespace) -> int:
    from core import heartbeats

    db = open_db(settings_for(args))
    workers = heartbeats.list_workers(db)
    if args.json:
        print_json([w.to_dict() for w in workers])
        return EXIT_OK
    print(table(["WORKER", "STATE", "PID", "STARTED", "LAST SEEN", "IN FLIGHT", "PROCESSED"],
                [[clean(w.id), w.state, str(w.pid), ago(w.started_at), ago(w.last_seen_at),
                  str(w.in_flight), str(w.processed)] for w in workers]))
    return EXIT_OK


def cmd_schedules(args: argparse.Namespace) -> int:
    """The app's recurring schedules: how they repeat, the next slot, the last slot's job."""
    from core import clock, schedules

    settings = settings_for(args)
    registry = app_for(settings)
    db = open_db(settings)
    states = schedules.schedule_states(db, registry.schedules())
    if args.json:
        print_json([s.to_dict() for s in states])
        return EXIT_OK
    if not states:
        print("no recurring schedules in this app (declare them with registry.recurring)")
        return EXIT_OK
    rows = []
    for s in states:
        if s.last_slot_at is None:
            last, job = "-", "-"
        else:
            last = ago(s.last_slot_at)
            job = (f"{s.last_job_id} {s.last_job_status or '?'}" if s.last_job_id is not None
                   else "skipped (previous job still active)")
        rows.append([clean(s.name, 32), s.job_type, s.spec,
                     f"{until(s.next_slot)} ({clock.iso(s.next_slot)})", last, job])
    print(table(["SCHEDULE", "TYPE", "REPEATS", "NEXT SLOT", "LAST SLOT", "LAST JOB"], rows))
    return EXIT_OK
