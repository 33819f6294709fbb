"""Stage `table`: the results of every net in the shape of the paper's tables, as Markdown and
CSV: classification (a row per net and method, a column per class, mAP last) and the action
task (a row per net and variant), read from the metrics files alone."""

from __future__ import annotations

import logging

from pipeline.core.atomic import write_text
from pipeline.core.params import Params
from pipeline.scoring.paper_table import action_rows, as_csv, as_markdown, classification_rows

log = logging.getLogger("pipeline")


def run(params: Params) -> None:
    """Write ``classification.{md,csv}`` and ``action.{md,csv}`` under `Layout.tables` from the
    metrics of every net of ``features.nets``."""
    layout, nets, name = params.layout, params.features.nets, params.dataset.name
    split = params.dataset.eval_split
    tables = {
        "classification": (
            classification_rows(layout, nets, split),
            list(params.dataset.classes),
            f"{name}: classification AP (%) on {split}",
        ),
        "action": (
            action_rows(layout, nets),
            list(params.action.actions),
            f"{name}: action AP (%) on {split}",
        ),
    }
    for table, (rows, columns, title) in tables.items():
        write_text(as_markdown(rows, columns, title), layout.tables() / f"{table}.md")
        write_text(as_csv(rows, columns), layout.tables() / f"{table}.csv")
        log.info("%s: %d rows, %s", table, len(rows), layout.tables() / f"{table}.md")
