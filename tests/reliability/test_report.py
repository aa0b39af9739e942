"""docs/RELIABILITY.md's figures are rendered from the summary JSON, not typed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability import report

DOC = Path(__file__).resolve().parents[2] / "docs" / "RELIABILITY.md"


def _summary(lost: int) -> dict[str, dict[str, object]]:
    return {"test_crash_in_the_flush_window_loses_only_retried_work[sqlite]": {
        "backend": "sqlite", "jobs": 2, "workers": 2, "sigkills": 1,
        "results_lost_in_crash": 2, "lost": lost, "duplicated": 0, "stuck": 0}}


def test_the_table_shows_the_summary_figures() -> None:
    row = report.figures_table(_summary(lost=7)).splitlines()[-1]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:5] == ["sqlite", "2", "2"]
    assert cells[5] == "1 SIGKILL with 2 results unwritten"
    assert cells[6:] == ["7", "0", "0"]


def test_the_document_has_every_generated_block() -> None:
    text = DOC.read_text(encoding="utf-8")
    for name in report.BLOCKS:
        assert f"<!-- BEGIN generated:{name} -->" in text
        assert f"<!-- END generated:{name} -->" in text
    rendered = report.render_into(text, _summary(lost=5))
    assert "| 5 | 0 | 0 |" in rendered


def test_a_document_without_markers_is_refused() -> None:
    with pytest.raises(SystemExit, match="markers"):
        report.render_into("no markers here", _summary(lost=0))
