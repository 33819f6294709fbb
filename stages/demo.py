"""Stage `demo`: generate the embedded synthetic VOCdevkit."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.demo import generate_demo
from stages.common import classes_of, dataset_root, load_params, log, param, params_option


@click.command("demo")
@params_option
def demo(params_path: Path) -> None:
    """Write the synthetic demo dataset at `dataset.root` (a VOCdevkit/VOC2007 layout)."""
    params = load_params(params_path)
    root = dataset_root(params)
    splits = generate_demo(
        root,
        classes_of(params),
        n_trainval=int(param(params, "demo.n_trainval")),
        n_test=int(param(params, "demo.n_test")),
        seed=int(param(params, "demo.seed")),
    )
    log.info("demo dataset at %s: %s", root, {s: len(ids) for s, ids in splits.items()})
