"""The paper-shaped tables (pipeline/scoring/paper_table.py): rows read from the metrics alone."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from pipeline.core.errors import PipelineError
from pipeline.core.layout import Layout
from pipeline.scoring.paper_table import (
    action_rows,
    as_csv,
    as_markdown,
    classification_rows,
)

LAYOUT = Layout("voc")


def write(path: Path, metrics: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics))


def test_rows_come_from_compare_else_from_evaluate_and_skipped_actions_are_left_out(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    ap = {"cat": 0.5, "dog": None}
    write(LAYOUT.metrics("a") / "compare.json", {"methods": {"weak": {"ap": ap, "mAP": 0.5}}})
    write(LAYOUT.metrics("b") / "test.json", {"ap": {"cat": 0.25, "dog": 1.0}, "mAP": 0.625})
    rows = classification_rows(LAYOUT, ["a", "b", "c"], "test")  # c: nothing ran yet
    assert [(r.net, r.method, r.m_ap) for r in rows] == [
        ("a", "weak max-pool", 0.5),
        ("b", "patches 2014", 0.625),
    ]
    write(LAYOUT.training_metrics("a", "action-frozen"), {"AP": {"run": 0.75}, "mAP": 0.75})
    write(LAYOUT.training_metrics("a", "action-update"), {"action_subset": False, "mAP": None})
    (row,) = action_rows(LAYOUT, ["a"])
    assert row.method == "frozen (PRE-1512)" and row.ap == {"run": 0.75}

    table = list(csv.reader(io.StringIO(as_csv(rows, ["cat", "dog"]))))
    assert table == [
        ["net", "method", "cat", "dog", "mAP"],
        ["a", "weak max-pool", "0.5", "", "0.5"],
        ["b", "patches 2014", "0.25", "1.0", "0.625"],
    ]
    markdown = as_markdown(rows, ["cat", "dog"], "voc")
    assert "| a | weak max-pool | **50.0** | - | 50.0 |" in markdown
    assert "| b | patches 2014 | 25.0 | **100.0** | **62.5** |" in markdown


def test_a_damaged_metrics_file_is_one_line_naming_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = LAYOUT.metrics("a") / "compare.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(PipelineError, match=r"compare.json: not a metrics file"):
        classification_rows(LAYOUT, ["a"], "test")


def test_metrics_of_an_earlier_version_without_aps_per_class_leave_their_cells_empty(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    write(LAYOUT.metrics("a") / "compare.json", {"methods": {"patches": {"mAP": 0.5}}})
    rows = classification_rows(LAYOUT, ["a"], "test")
    assert as_csv(rows, ["cat"]).splitlines()[1] == "a,patches 2014,,0.5"
