"""Render docs/RELIABILITY.md's figures from the summary JSON a reliability run writes.

    SYNCBRIDGE_RELIABILITY_SUMMARY=/tmp/rel.json python -m pytest -q tests/reliability
    python -m tests.reliability.report /tmp/rel.json --write docs/RELIABILITY.md

Every number in the generated part comes from that file (what the tests observed); the
document keeps it between `<!-- BEGIN generated:NAME -->` and `<!-- END generated:NAME -->`
markers. Without --write the rendered blocks are printed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

Figures = dict[str, Any]


def _n(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def _sum(value: Any) -> int:
    return sum(value.values()) if isinstance(value, dict) else int(value or 0)


def _faults_killed(f: Figures) -> str:
    return f"{f['sigkills']} SIGKILLs, {f['attempts_killed']} attempts killed"


def _faults_paused(f: Figures) -> str:
    return (f"1 pause ({f['paused_seconds']} s, lease {f.get('lease_seconds', '?')} s), "
            f"stopped at try {f['stop_tries']}")


def _faults_many(f: Figures) -> str:
    return f"mixed population over HTTP, {_n(f['attempts'])} attempts"


def _faults_sigterm(f: Figures) -> str:
    return (f"{f['sigterms']} SIGTERMs, {f['in_flight_at_sigterm']} attempts in flight, "
            f"{f['released']} released")


def _faults_second(f: Figures) -> str:
    return (f"{f['sigterms']} SIGTERMs, exit {f['exit_seconds_after_second']} s after the "
            "second")


def _faults_pg(f: Figures) -> str:
    return (f"{f['terminate_rounds']} rounds, {f['backends_terminated']} backends terminated, "
            f"{f['outage_seconds']} s outage")


def _faults_restart(f: Figures) -> str:
    return f"`pg_ctlcluster ... restart`, {f['restart_seconds']} s down"


def _faults_lock(f: Figures) -> str:
    return "write lock held " + " + ".join(f"{h} s" for h in f["lock_holds_seconds"])


def _faults_upstream(f: Figures) -> str:
    return f"{f['faults']} faults, {f['classified_as_designed']} classified as designed"


def _faults_operators(f: Figures) -> str:
    return (f"{f['operators']} operators x {f['race_seconds']} s: "
            f"{_n(_sum(f['accepted']))} accepted, {_n(_sum(f['refused']))} refused ops")


def _faults_crash(f: Figures) -> str:
    return f"{f['sigkills']} SIGKILL with {f['results_lost_in_crash']} results unwritten"


# (test function, scenario, test file, faults column)
SCENARIOS: list[tuple[str, str, str, Callable[[Figures], str]]] = [
    ("test_worker_sigkilled_mid_attempt_repeatedly", "1 SIGKILL mid-attempt",
     "test_worker_killed.py", _faults_killed),
    ("test_paused_worker_is_fenced_out", "2 SIGSTOP past lease, SIGCONT",
     "test_worker_paused.py", _faults_paused),
    ("test_many_workers_many_jobs", "3 many workers, many jobs", "test_many_workers.py",
     _faults_many),
    ("test_sigterm_under_load", "4 SIGTERM under load", "test_graceful_shutdown.py",
     _faults_sigterm),
    ("test_second_sigterm_releases_at_once", "4 second SIGTERM", "test_graceful_shutdown.py",
     _faults_second),
    ("test_postgres_connections_killed_and_outage", "5 connections killed + outage",
     "test_database_faults.py", _faults_pg),
    ("test_postgres_restart", "5 PostgreSQL restart (opt-in)", "test_database_faults.py",
     _faults_restart),
    ("test_sqlite_writer_holds_the_lock", "5 writer holds the lock", "test_database_faults.py",
     _faults_lock),
    ("test_upstream_faults_are_classified", "6 upstream faults", "test_upstream_faults.py",
     _faults_upstream),
    ("test_operators_race_each_other_and_the_workers", "8 operators racing",
     "test_concurrent_operators.py", _faults_operators),
    ("test_crash_in_the_flush_window_loses_only_retried_work", "crash in the flush window",
     "test_crash_flush_window.py", _faults_crash),
]


def _runs(summary: dict[str, Figures], test: str) -> list[tuple[str, Figures]]:
    """(database, figures) for each parametrization of `test` in the summary."""
    out = []
    for key, figures in sorted(summary.items()):
        if key.startswith("_"):
            continue
        name, _, param = key.partition("[")
        if name == test:
            out.append((figures.get("backend", param.rstrip("]")), figures))
    return out


def figures_table(summary: dict[str, Figures]) -> str:
    rows = ["| scenario | test file | database | jobs | worker processes | faults injected "
            "| lost | duplicated | stuck |",
            "|---|---|---|---:|---:|---|---:|---:|---:|"]
    for test, scenario, path, faults in SCENARIOS:
        for k, (database, f) in enumerate(_runs(summary, test)):
            first = k == 0
            rows.append(
                f"| {scenario if first else ''} | {f'`{path}`' if first else ''} | {database} "
                f"| {_n(f['jobs'])} | {f['workers']} | {faults(f)} | {_n(f['lost'])} "
                f"| {_n(f['duplicated'])} | {_n(f['stuck'])} |")
    return "\n".join(rows)


def bad_input(summary: dict[str, Figures]) -> str:
    parts = []
    for database, f in _runs(summary, "test_core_enqueue_fuzzed"):
        parts.append(f"{database}: core enqueue {_n(f.get('core_stored', 0))} stored, "
                     f"{_n(f.get('core_rejected', 0))} refused")
    for database, f in _runs(summary, "test_cli_enqueue_fuzzed"):
        parts.append(f"{database}: CLI {_n(f.get('cli_stored', 0))} stored, "
                     f"{_n(f.get('cli_duplicate', 0))} duplicates, "
                     f"{_n(f.get('cli_usage_error', 0))} usage errors")
    for database, f in _runs(summary, "test_search_fuzzed"):
        parts.append(f"{database}: {_n(f.get('search_answered', 0))} searches answered")
    for database, f in _runs(summary, "test_cli_enqueue_raw_argv_subprocess"):
        parts.append(f"{database}: raw argv {f['cases']} runs, exit codes "
                     f"`{' '.join(map(str, f['exit_codes']))}`, {f['stored']} stored, "
                     f"{f['tracebacks']} tracebacks, {f['partial_rows']} partial rows")
    return "Bad input (point 7), last run: " + "; ".join(parts) + "."


def upstream_table(summary: dict[str, Figures]) -> str:
    runs = _runs(summary, "test_upstream_faults_are_classified")
    names = [database for database, _ in runs]
    rows = [f"| fault | attempts | error type | HTTP status | gap between attempts "
            f"({' / '.join(names)}) |", "|---|---|---|---|---|"]
    if not runs:
        return "\n".join(rows)
    for fault, seen in runs[0][1]["table"].items():
        outcomes, errors, statuses = seen[0], seen[1], seen[2]
        gaps = []
        for _, f in runs:
            entry = f["table"].get(fault, [])
            gaps.append(f"{entry[3]} s" if len(entry) > 3 else "—")
        rows.append(f"| `{fault}` | {', '.join(outcomes)} | {', '.join(errors)} "
                    f"| {', '.join('none' if s is None else str(s) for s in statuses)} "
                    f"| {' / '.join(gaps)} |")
    return "\n".join(rows)


def run_line(summary: dict[str, Figures]) -> str:
    run = summary.get("_run")
    if not run:
        return "(no `_run` entry in the summary)"
    outcomes = ", ".join(f"{n} {k}" for k, n in sorted(run["outcomes"].items()))
    minutes, seconds = divmod(int(run["seconds"]), 60)
    return (f"Last run: {run['date']}, {outcomes}, {minutes} min {seconds} s wall time on "
            f"{run['cpus']} CPUs (load average {run['load_average_1m']} at the end).")


def every_figure(summary: dict[str, Figures]) -> str:
    lines = ["| test | figures |", "|---|---|"]
    for key, figures in sorted(summary.items()):
        if key.startswith("_"):
            continue
        shown = {k: v for k, v in figures.items() if k != "table"}
        lines.append(f"| `{key}` | `{json.dumps(shown, sort_keys=True)}` |")
    return "\n".join(lines)


def _num(value: Any, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value != int(value):
        return f"{value:,.1f}{suffix}"
    return f"{int(value):,}{suffix}" if isinstance(value, (int, float)) else f"{value}{suffix}"


def _prefixed(f: Figures, prefix: str) -> Figures:
    return {k[len(prefix) + 1:]: v for k, v in f.items() if k.startswith(prefix + "_")}


def upstream_protection(summary: dict[str, Figures]) -> str:
    """Issue 11: protected vs unprotected, per scenario and database
    (test_upstream_protection.py)."""
    rows = ["| scenario | database | protection | workers | jobs | what the upstream saw "
            "| dead | wasted attempts |", "|---|---|---|---:|---:|---|---:|---:|"]
    for database, f in _runs(summary, "test_rate_limit_is_shared_by_the_fleet"):
        for mode, label in (("configured", "on, rate configured = R"),
                            ("adaptive", "on, no rate configured (AIMD)"),
                            ("off", "off")):
            g = _prefixed(f, mode)
            rows.append(
                f"| rate limit, R = {_num(g.get('allowed_per_s'))}/s | {database} | {label} "
                f"| {_num(g.get('workers'))} | {_num(g.get('jobs'))} | steady part: "
                f"{_num(g.get('steady_requests_per_s'))}/s sent (max "
                f"{_num(g.get('steady_max_requests_per_s'))}), "
                f"{_num(g.get('steady_ok_per_s'))}/s useful, "
                f"{_num(round(100 * float(g.get('share_429') or 0), 1))} % 429s of "
                f"{_num(g.get('requests'))} requests; drained in "
                f"{_num(g.get('drain_seconds'))} s | {_num(g.get('dead'))} "
                f"| {_num(g.get('wasted_attempts'))} |")
    for database, f in _runs(summary, "test_outage_opens_the_breaker_and_loses_no_budget"):
        for mode, label in (("protected", "on"), ("off", "off")):
            g = _prefixed(f, mode)
            opened = (f"breaker opened after {_num(g.get('failures_when_opened'))} failures, "
                      f"{_num(g.get('probes'))} probes; " if g.get("breaker_opened") else "")
            rows.append(
                f"| outage {_num(g.get('outage_seconds'))} s (refused, then 503) | {database} "
                f"| {label} | {_num(g.get('workers'))} | {_num(g.get('jobs'))} | {opened}"
                f"{_num(g.get('requests_to_broken_upstream'))} requests reached the broken "
                f"upstream; full speed {_num(g.get('back_to_full_speed_s'))} s after its "
                f"return | {_num(g.get('dead'))} | {_num(g.get('wasted_attempts'))} |")
    for database, f in _runs(summary, "test_one_upstream_down_does_not_slow_the_other"):
        for mode, label in (("protected", "on"), ("off", "off")):
            ratio = f.get(f"{mode}_beta_ratio")
            rows.append(
                f"| isolation: alpha refused, beta healthy | {database} | {label} "
                f"| {_num(f.get('workers'))} | - | beta "
                f"{_num(f.get(f'{mode}_beta_ok_per_s_alpha_down'))}/s vs "
                f"{_num(f.get(f'{mode}_beta_normal_ok_per_s'))}/s alone "
                f"({_num(None if ratio is None else round(100 * ratio))} %) "
                f"| {_num(f.get(f'{mode}_alpha_dead'))} (alpha) | - |")
    for database, f in _runs(summary, "test_probe_lost_with_its_worker_is_taken_over"):
        rows.append(
            f"| SIGKILL mid-probe | {database} | on | {_num(f.get('workers'))} "
            f"| {_num((f.get('success') or 0) + (f.get('dead') or 0))} | probe lease "
            f"{_num(f.get('probe_lease_seconds'))} s; the survivor probed, breaker closed "
            f"{_num(f.get('closed_after_s'))} s after the kill; the lost probe's attempts: "
            f"{', '.join(f.get('lost_probe_attempts') or [])} | {_num(f.get('dead'))} | - |")
    return "\n".join(rows)


BLOCKS: dict[str, Callable[[dict[str, Figures]], str]] = {
    "run": run_line, "figures": figures_table, "bad-input": bad_input,
    "upstream-faults": upstream_table, "every-figure": every_figure,
    "upstream-protection": upstream_protection,
}


def render_into(document: str, summary: dict[str, Figures],
                only: list[str] | None = None) -> str:
    for name, render in BLOCKS.items():
        if only and name not in only:
            continue
        pattern = re.compile(rf"(<!-- BEGIN generated:{name} -->\n).*?(<!-- END generated:"
                             rf"{name} -->)", re.S)
        if not pattern.search(document):
            raise SystemExit(f"report: no generated:{name} markers in the document")
        block = render(summary)

        def fill(m: re.Match[str], block: str = block) -> str:
            return m.group(1) + block + "\n" + m.group(2)

        document = pattern.sub(fill, document)
    return document


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summary", type=Path)
    parser.add_argument("--write", type=Path, help="the document to update in place")
    parser.add_argument("--only", action="append", choices=sorted(BLOCKS),
                        help="render just this block (repeatable): a run of some tests")
    args = parser.parse_args(argv)
    summary = json.loads(args.summary.read_text())
    if args.write:
        args.write.write_text(render_into(args.write.read_text(), summary, args.only))
    else:
        for name, render in BLOCKS.items():
            print(f"<!-- {name} -->\n{render(summary)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
