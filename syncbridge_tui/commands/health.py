"""Subcommands about the queue's health: metrics and workers."""

from __future__ import annotations

import argparse

from core import heartbeats, metrics
from syncbridge_tui.commands.common import EXIT_OK, open_db, print_json, settings_for, table
from syncbridge_tui.text import ago, clean, ms, pct


def cmd_metrics(args: argparse.Namespace) -> int:
    db = open_db(settings_for(args))
    m = metrics.collect(db)
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
    if m.upstreams:  # upstream protection (core.upstream_protection)
        print()
        print(table(["UPSTREAM", "STATE", "IN FLIGHT", "WAITING", "429s", "5xx"],
                    [[clean(u.name), u.state.replace("_", "-"), str(u.in_flight),
                      str(u.waiting), str(u.recent_429), str(u.recent_5xx)]
                     for u in m.upstreams]))
    return EXIT_OK


def cmd_workers(args: argparse.Namespace) -> int:
    db = open_db(settings_for(args))
    workers = heartbeats.list_workers(db)
    if args.json:
        print_json([w.to_dict() for w in workers])
        return EXIT_OK
    print(table(["WORKER", "STATE", "PID", "STARTED", "LAST SEEN", "IN FLIGHT", "PROCESSED"],
                [[clean(w.id), w.state, str(w.pid), ago(w.started_at), ago(w.last_seen_at),
                  str(w.in_flight), str(w.processed)] for w in workers]))
    return EXIT_OK
