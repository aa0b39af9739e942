"""Render docs/RELIABILITY.md's generated blocks from a reliability run's summary JSON.

    python -m tests.reliability.report [SUMMARY.json] [--check]

A generated block sits between `<!-- BEGIN generated:NAME -->` and
`<!-- END generated:NAME -->`; everything in it is computed from the figures the tests
recorded (`record` fixture, tests/reliability/conftest.py), nothing is typed in. Only the
blocks whose figures are in the summary are rewritten. `--check` exits 1 if the document
differs from what the summary renders.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.reliability.conftest import summary_path

DOC = Path(__file__).resolve().parents[2] / "docs" / "RELIABILITY.md"
PREFIX = "test_upstream_protection.py::"


def _get(figures: dict[str, Any], test: str, db: str) -> dict[str, Any] | None:
    for key in (f"{PREFIX}{test}[{db}]", f"{test}[{db}]"):
        if key in figures:
            return dict(figures[key])
    return None


def _n(value: Any, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}{suffix}" if value != int(value) else f"{int(value):,}{suffix}"
    if isinstance(value, int):
        return f"{value:,}{suffix}"
    return f"{value}{suffix}"


def upstream_protection(figures: dict[str, Any]) -> str | None:
    """Protected vs unprotected, per scenario and database."""
    rows: list[str] = []
    for db in ("sqlite", "postgresql"):
        rate = _get(figures, "test_rate_limit_is_shared_by_the_fleet", db)
        if rate:
            for mode, label in (("configured", "protected, rate configured = R"),
                                ("adaptive", "protected, no rate configured (AIMD)"),
                                ("off", "protection off")):
                f = {k[len(mode) + 1:]: v for k, v in rate.items() if k.startswith(mode + "_")}
                rows.append(
                    f"| rate limit R={_n(f.get('allowed_per_s'))}/s | {db} | {label} | "
                    f"{_n(f.get('workers'))} | {_n(f.get('jobs'))} | "
                    f"{_n(f.get('steady_requests_per_s'))}/s (max "
                    f"{_n(f.get('steady_max_requests_per_s'))}) sent, "
                    f"{_n(f.get('steady_ok_per_s'))}/s useful; "
                    f"{_n(round(100 * f.get('share_429', 0.0), 1))} % 429s | "
                    f"{_n(f.get('dead'))} | {_n(f.get('wasted_attempts'))} |")
        out = _get(figures, "test_outage_opens_the_breaker_and_loses_no_budget", db)
        if out:
            for mode, label in (("protected", "protected"), ("off", "protection off")):
                f = {k[len(mode) + 1:]: v for k, v in out.items() if k.startswith(mode + "_")}
                opened = (f"breaker opened after {_n(f.get('failures_when_opened'))} "
                          f"failures, {_n(f.get('probes'))} probes; "
                          if f.get("breaker_opened") else "no breaker; ")
                rows.append(
                    f"| outage {_n(f.get('outage_seconds'))} s (refused, then 503) | {db} | "
                    f"{label} | {_n(f.get('workers'))} | {_n(f.get('jobs'))} | {opened}"
                    f"{_n(f.get('requests_to_broken_upstream'))} requests to the broken "
                    f"upstream; full speed {_n(f.get('back_to_full_speed_s'))} s after it "
                    f"returned | {_n(f.get('dead'))} | {_n(f.get('wasted_attempts'))} |")
        iso = _get(figures, "test_one_upstream_down_does_not_slow_the_other", db)
        if iso:
            for mode, label in (("protected", "protected"), ("off", "protection off")):
                ratio = iso.get(f"{mode}_beta_ratio")
                rows.append(
                    f"| isolation: alpha down, beta healthy | {db} | {label} | "
                    f"{_n(iso.get('workers'))} | - | beta "
                    f"{_n(iso.get(f'{mode}_beta_ok_per_s_alpha_down'))}/s vs "
                    f"{_n(iso.get(f'{mode}_beta_normal_ok_per_s'))}/s alone "
                    f"({_n(None if ratio is None else round(100 * ratio))} %) | "
                    f"{_n(iso.get(f'{mode}_alpha_dead'))} (alpha) | - |")
        probe = _get(figures, "test_probe_lost_with_its_worker_is_taken_over", db)
        if probe:
            rows.append(
                f"| SIGKILL mid-probe | {db} | protected | {_n(probe.get('workers'))} | "
                f"{_n((probe.get('success') or 0) + (probe.get('dead') or 0))} | probe "
                f"lease {_n(probe.get('probe_lease_seconds'))} s; breaker closed "
                f"{_n(probe.get('closed_after_s'))} s after the kill by the survivor's "
                f"probe; lost probe's attempts: "
                f"{', '.join(probe.get('lost_probe_attempts') or [])} | "
                f"{_n(probe.get('dead'))} | - |")
    if not rows:
        return None
    head = ("| scenario | database | protection | workers | jobs | what the upstream saw "
            "| dead | wasted attempts |\n|---|---|---|---:|---:|---|---:|---:|")
    return head + "\n" + "\n".join(rows)


BLOCKS: dict[str, Callable[[dict[str, Any]], str | None]] = {
    "upstream-protection": upstream_protection,
}


def render(doc: str, figures: dict[str, Any]) -> str:
    for name, fn in BLOCKS.items():
        body = fn(figures)
        if body is None:
            continue
        pattern = re.compile(rf"(<!-- BEGIN generated:{re.escape(name)} -->\n).*?"
                             rf"(<!-- END generated:{re.escape(name)} -->)", re.S)
        def fill(m: re.Match[str], body: str = body) -> str:
            return m.group(1) + body + "\n" + m.group(2)

        doc = pattern.sub(fill, doc)
    return doc


def main(argv: list[str]) -> int:
    check = "--check" in argv
    paths = [a for a in argv if not a.startswith("--")]
    path = Path(paths[0]) if paths else summary_path()
    figures = json.loads(path.read_text())
    doc = DOC.read_text()
    new = render(doc, figures)
    if check:
        return 0 if new == doc else 1
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
