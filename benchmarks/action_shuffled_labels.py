"""mAP of each action variant trained on the true labels against the same variant trained on
labels permuted across the training persons: the check that each one learns from its labels.

Uses the caches of a finished `dvc repro` (params.yaml in the current directory); writes
nothing. Run on demand:

    python benchmarks/action_shuffled_labels.py [--net effnet-lite0] [--seed 0]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.action.backbone_models import model_builder
from pipeline.action.models import VARIANTS, fit_and_score
from pipeline.core.params import load_params
from pipeline.scoring.average_precision import mean_ap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="effnet-lite0")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    params = load_params(Path("params.yaml"))
    print("variant   true mAP  shuffled mAP")
    for variant in VARIANTS:
        build = model_builder(params, variant, args.net)
        true = mean_ap(fit_and_score(params, args.net, variant, build, None).aps)
        shuffled = mean_ap(fit_and_score(params, args.net, variant, build, None, args.seed).aps)
        print(f"{variant:8s}  {true:.4f}    {shuffled:.4f}")


if __name__ == "__main__":
    main()
