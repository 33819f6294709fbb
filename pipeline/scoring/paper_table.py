"""The results in the shape of the paper's tables: one row per net and method (classification,
its Table 2) or per net and variant (actions, its Table 3), a column per class, mAP last, read
from the metrics files the stages wrote (nothing is recomputed)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import PipelineError
from pipeline.core.layout import Layout
from pipeline.scoring.methods import METHODS

ACTION_VARIANTS = {  # the action task's variants, as the paper names its rows
    "frozen": "frozen (PRE-1512)",
    "update": "FC6 updated (PRE-1512U)",
    "scratch": "from scratch (NO PRETRAIN)",
}


@dataclass(frozen=True)
class TableRow:
    """One row: the net, the method (or variant) as shown, and the AP of each column's class
    (a fraction, None where the class has no positive) and the mAP."""

    net: str
    method: str
    ap: dict[str, float | None]
    m_ap: float | None


def read_metrics(path: Path) -> dict | None:
    """The JSON metrics at `path`, or None when the stage that writes them has not run.
    PipelineError naming the file when it is not JSON."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as err:
        raise PipelineError(f"{path}: not a metrics file ({err}); re-run its stage") from err


def classification_rows(layout: Layout, nets: Sequence[str], eval_split: str) -> list[TableRow]:
    """For each net, a row per method of `compare` (its ``compare.json``), or, when `compare`
    has not run, the 2014 method alone from `evaluate` (``<eval_split>.json``). A value the
    metrics do not hold (a file of an earlier version without APs per class) is left empty."""
    rows = []
    for net in nets:
        compared = read_metrics(layout.metrics(net) / "compare.json")
        if compared is not None:
            for method, shown in METHODS.items():
                if method in compared["methods"]:
                    result = compared["methods"][method]
                    rows.append(TableRow(net, shown, result.get("ap") or {}, result.get("mAP")))
            continue
        evaluated = read_metrics(layout.metrics(net) / f"{eval_split}.json")
        if evaluated is not None:
            rows.append(
                TableRow(net, METHODS["patches"], evaluated.get("ap") or {}, evaluated.get("mAP"))
            )
    return rows


def action_rows(layout: Layout, nets: Sequence[str]) -> list[TableRow]:
    """For each net, a row per variant of the action task that ran on an Action subset (its
    ``action-<variant>.json``)."""
    rows = []
    for net in nets:
        for variant, shown in ACTION_VARIANTS.items():
            result = read_metrics(layout.training_metrics(net, f"action-{variant}"))
            if result is not None and result.get("action_subset", True):
                rows.append(TableRow(net, shown, result.get("AP") or {}, result.get("mAP")))
    return rows


def as_csv(rows: Sequence[TableRow], columns: Sequence[str]) -> str:
    """The rows as CSV: ``net,method,<column>...,mAP``, APs as the metrics hold them (fractions,
    empty where undefined)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["net", "method", *columns, "mAP"])
    for row in rows:
        values = [row.ap.get(c) for c in columns] + [row.m_ap]
        writer.writerow([row.net, row.method, *("" if v is None else v for v in values)])
    return out.getvalue()


def as_markdown(rows: Sequence[TableRow], columns: Sequence[str], title: str) -> str:
    """The rows as a Markdown table under `title`, APs in percent to one decimal as the paper
    prints them (``-`` where undefined), the best value of each column in bold."""

    def percent(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}"

    table = [[percent(row.ap.get(c)) for c in columns] + [percent(row.m_ap)] for row in rows]
    for j in range(len(columns) + 1):
        shown = [line[j] for line in table if line[j] != "-"]
        best = max(shown, key=float, default=None)
        for line in table:
            line[j] = f"**{line[j]}**" if best is not None and line[j] == best else line[j]
    lines = [
        f"# {title}",
        "",
        "| net | method | " + " | ".join(columns) + " | mAP |",
        "| --- | --- | " + " | ".join("---:" for _ in range(len(columns) + 1)) + " |",
    ]
    for row, shown in zip(rows, table, strict=True):
        lines.append(f"| {row.net} | {row.method} | " + " | ".join(shown) + " |")
    return "\n".join(lines) + "\n"
