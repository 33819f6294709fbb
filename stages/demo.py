"""Stage `demo`: generate the embedded synthetic VOCdevkit at `demo.root`."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.demo import generate_demo
from stages.common import load_params, log, param, params_option


@click.command("demo")
@params_option
def demo(params_path: Path) -> None:
    """Write the synthetic demo dataset at `demo.root` (a VOCdevkit/VOC2007 layout).

    Only a directory that a previous `pipeline demo` made is ever replaced; `dataset.root` is
    not read here, so pointing it at a real devkit leaves that devkit alone.
    """
    params = load_params(params_path)
    root = Path(param(params, "demo.root"))
    splits = generate_demo(
        root,
        [str(c) for c in param(params, "demo.classes")],
        n_trainval=int(param(params, "demo.n_trainval")),
        n_test=int(param(params, "demo.n_test")),
        seed=int(param(params, "demo.seed")),
    )
    log.info("demo dataset at %s: %s", root, {s: len(ids) for s, ids in splits.items()})
