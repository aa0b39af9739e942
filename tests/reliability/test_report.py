"""docs/RELIABILITY.md's figures are rendered from the summary JSON, not typed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability import report

DOC = Path(__file__).resolve().parents[2] / "docs" / "RELIABILITY.md"


# A made-up run, described the way the scenarios observe one: each job's expected and final
# status and its attempt outcomes. The figures are counted from it as the scenarios count
# theirs, so the rendering is checked against counts, not against typed-in numbers.
Observed = list[tuple[str, str, list[str]]]  # (expected, final, attempt outcomes)


def _run(left_running: int) -> Observed:
    """One job recovered and finished, and `left_running` jobs whose lease expired and that
    nobody finished: what `lost` and `stuck` are then counted from."""
    ok: Observed = [("success", "success", ["lease_expired", "success"])]
    return ok + [("success", "running", ["lease_expired"])] * left_running


def _summary(observed: Observed) -> dict[str, dict[str, object]]:
    return {"test_crash_in_the_flush_window_loses_only_retried_work[sqlite]": {
        "backend": "sqlite", "jobs": len(observed), "workers": 2, "sigkills": 1,
        "results_lost_in_crash": sum("lease_expired" in a for _, _, a in observed),
        "lost": sum(final != expected for expected, final, _ in observed),
        "duplicated": sum(a.count("success") > 1 for _, _, a in observed),
        "stuck": sum(final in ("pending", "running") for _, final, _ in observed)}}


def test_the_table_shows_the_summary_figures() -> None:
    observed = _run(left_running=7)
    figures = _summary(observed)["test_crash_in_the_flush_window_loses_only_retried_work[sqlite]"]
    row = report.figures_table(_summary(observed)).splitlines()[-1]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:5] == ["sqlite", str(len(observed)), "2"]
    assert cells[5] == f"1 SIGKILL with {figures['results_lost_in_crash']} results unwritten"
    assert cells[6:] == [str(figures[k]) for k in ("lost", "duplicated", "stuck")]


def test_the_document_has_every_generated_block() -> None:
    text = DOC.read_text(encoding="utf-8")
    for name in report.BLOCKS:
        assert f"<!-- BEGIN generated:{name} -->" in text
        assert f"<!-- END generated:{name} -->" in text
    observed = _run(left_running=5)
    figures = _summary(observed)["test_crash_in_the_flush_window_loses_only_retried_work[sqlite]"]
    rendered = report.render_into(text, _summary(observed))
    assert f"| {figures['lost']} | {figures['duplicated']} | {figures['stuck']} |" in rendered


def test_a_document_without_markers_is_refused() -> None:
    with pytest.raises(SystemExit, match="markers"):
        report.render_into("no markers here", _summary(_run(left_running=1)))
