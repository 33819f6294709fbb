"""Stage `fit-action-update`: FC6 (or its counterpart) re-trained from its pretrained weights
with FCa + FCb, on the cached inputs of FC6 of the training split's persons (those with
exactly one listed action), every person of the evaluation split scored; writes the model,
the per-action AP (VOC2012 rule) and devkit result files."""

from __future__ import annotations

from pipeline.action.backbone_models import model_builder
from pipeline.action.models import fit_variant
from pipeline.core.atomic import exclusive
from pipeline.core.params import Params


def run(params: Params, net: str | None, *, device: str | None) -> None:
    """Train and evaluate the update variant for `net` (default: every net of
    ``features.nets``); `device` overrides ``head.device``."""
    for name in params.net_names(net):
        with exclusive(params.layout.head(name, "action-update").parent):
            fit_variant(params, name, "update", model_builder(params, "update", name), device)
