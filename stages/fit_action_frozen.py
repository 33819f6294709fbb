"""Stage `fit-action-frozen`: FCa + FCb of the action task trained on the cached descriptors of
the training split's persons (those with exactly one listed action), every person of the
evaluation split scored; writes the model, the per-action AP (VOC2012 rule) and devkit result
files."""

from __future__ import annotations

from functools import partial

from pipeline.action.models import adaptation_layers, fit_variant
from pipeline.core.atomic import exclusive
from pipeline.core.params import Params


def run(params: Params, net: str | None, *, device: str | None) -> None:
    """Train and evaluate the frozen variant for `net` (default: every net of
    ``features.nets``); `device` overrides ``head.device``."""
    for name in params.net_names(net):
        with exclusive(params.layout.head(name, "action-frozen").parent):
            fit_variant(params, name, "frozen", partial(adaptation_layers, params), device)
