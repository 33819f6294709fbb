"""Stage `demo`: generate the embedded synthetic VOCdevkit at `demo.root`."""

from __future__ import annotations

import logging

from pipeline.core.atomic import exclusive
from pipeline.core.params import Params
from pipeline.data.synthetic_devkit import generate_demo

log = logging.getLogger("pipeline")


def run(params: Params) -> None:
    """Write the synthetic demo dataset at `demo.root` (a VOCdevkit/VOC2007 layout).

    Only a directory that a previous `pipeline demo` made is ever replaced; `dataset.root` is
    not read here, so pointing it at a real devkit leaves that devkit alone.
    """
    demo = params.demo
    with exclusive(demo.root):
        splits = generate_demo(
            demo.root, demo.classes, n_trainval=demo.n_trainval, n_test=demo.n_test,
            seed=demo.seed, actions=demo.actions, n_action_trainval=demo.n_action_trainval,
            n_action_test=demo.n_action_test,
        )  # fmt: skip
    log.info("demo dataset at %s: %s", demo.root, {s: len(ids) for s, ids in splits.items()})
