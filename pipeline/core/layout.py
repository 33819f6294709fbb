"""Where every output of one dataset lives, relative to the project directory.

Paths carry the dataset name (``dataset.name``) so that the outputs of two datasets never
overwrite each other, and a net's name as a directory (``torchvision:resnet50`` ->
``torchvision-resnet50``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# the code digests of the `pipeline` commands, one file per command (not per dataset: the code
# is the same for every dataset)
CODE_DIGESTS = Path("data/code")


def net_dir(net: str) -> str:
    """A net's name as a directory name (``torchvision:resnet50`` -> ``torchvision-resnet50``)."""
    return net.replace(":", "-")


@dataclass(frozen=True)
class Layout:
    """The output paths of the dataset named `dataset`."""

    dataset: str

    def manifests(self, split: str) -> Path:
        """``manifests/<dataset>/<split>``: images, objects and patches tables of a split."""
        return Path("manifests") / self.dataset / split

    def action_manifests(self, split: str) -> Path:
        """``manifests/<dataset>/action/<split>``: the persons table of an Action split."""
        return Path("manifests") / self.dataset / "action" / split

    def action_patches(self, split: str) -> Path:
        """``data/action-patches/<dataset>/<split>``: one centred patch per listed person."""
        return Path("data") / "action-patches" / self.dataset / split

    def action_results(self, net: str, variant: str, year: int) -> Path:
        """``data/action-results/<dataset>/<net>/<variant>/VOC<year>/Action``: devkit result
        files of one variant of the action task."""
        base = Path("data") / "action-results" / self.dataset / net_dir(net) / variant
        return base / f"VOC{year}" / "Action"

    def action_maps(self, net: str) -> Path:
        """``data/action-maps/<dataset>/<net>``: action map PNGs."""
        return Path("data") / "action-maps" / self.dataset / net_dir(net)

    def patches(self, split: str) -> Path:
        """``data/patches/<dataset>/<split>``: the HDF5 patch shards of a split."""
        return Path("data") / "patches" / self.dataset / split

    def features(self, net: str, split: str) -> Path:
        """``data/features/<dataset>/<net>/<split>``: the feature cache of a split."""
        return self.cache("features", net, split)

    def cache(self, kind: str, net: str, split: str) -> Path:
        """``data/<kind>/<dataset>/<net>/<split>``: a net's cache of a split, `kind`
        ``features`` (patch descriptors), ``dense`` (trunk maps), ``action-features`` (person
        descriptors) or ``action-below-fc6`` (what the person's FC6 reads)."""
        return Path("data") / kind / self.dataset / net_dir(net) / split

    def no_fc6(self, net: str, split: str) -> Path:
        """``data/action-below-fc6/<dataset>/<net>/<split>/no-fc6.txt``: written in place of the
        below-FC6 cache of a net without FC6, it says why there is none (one line)."""
        return self.cache("action-below-fc6", net, split) / "no-fc6.txt"

    def dense(self, net: str, split: str) -> Path:
        """``data/dense/<dataset>/<net>/<split>``: the trunk maps of a split (dense mode)."""
        return self.cache("dense", net, split)

    def window_rule(self, net: str, split: str) -> Path:
        """``data/dense/<dataset>/<net>/<split>.rule.pt``: how the split's cached maps become
        patch descriptors (the net's window rule, window and stride)."""
        return self.dense(net, split).with_name(f"{split}.rule.pt")

    def head(self, net: str, kind: str = "head") -> Path:
        """``data/heads/<dataset>/<net>/<kind>.pt``: trained layers of a kind
        (`pipeline.trained.trained_layers.KINDS`): ``head`` the adaptation layers on patches,
        ``windows`` on the windows of the dense maps, ``weak`` those trained with image labels,
        ``cam`` the full-image linear layer, ``action-<variant>`` the action task's."""
        return Path("data") / "heads" / self.dataset / net_dir(net) / f"{kind}.pt"

    def training_metrics(self, net: str, kind: str) -> Path:
        """``metrics/<dataset>/<net>/<name>.json``: the training summary of trained layers of
        `kind`: ``train.json`` for ``head``, ``action-<variant>.json`` (with the action task's
        mAP) for the action task, else ``train-<kind>.json``."""
        return self.metrics(net) / _training_file(kind)

    def training_plot(self, net: str, kind: str) -> Path:
        """``plots/<dataset>/<net>/<name>.json``: the per-epoch log of trained layers of `kind`
        (named as `training_metrics`)."""
        return self.plots(net) / _training_file(kind)

    def timing(self, net: str, work: str) -> Path:
        """``timings/<dataset>/<net>/<work>.json``: how long a piece of work took (a backbone
        pass: ``features-<split>``; training: named as `training_metrics`; ``compare``). Kept
        apart from the metrics, out of git and of dvc.lock, so that a re-run of the same code
        changes no tracked file."""
        return Path("timings") / self.dataset / net_dir(net) / f"{work}.json"

    def training_timing(self, net: str, kind: str) -> Path:
        """``timings/<dataset>/<net>/<name>.json``: the training time of trained layers of
        `kind` (named as `training_metrics`)."""
        return self.timing(net, Path(_training_file(kind)).stem)

    def comparison(self, net: str) -> Path:
        """``data/compare/<dataset>/<net>``: the methods' maps side by side (PNGs)."""
        return Path("data") / "compare" / self.dataset / net_dir(net)

    def scores_dir(self, net: str) -> Path:
        """``data/scores/<dataset>/<net>``: the image scores of a net, one file per split."""
        return Path("data") / "scores" / self.dataset / net_dir(net)

    def scores(self, net: str, split: str) -> Path:
        """``data/scores/<dataset>/<net>/<split>.parquet``: image scores per class."""
        return self.scores_dir(net) / f"{split}.parquet"

    def results(self, net: str, year: int) -> Path:
        """``data/results/<dataset>/<net>/VOC<year>/Main``: devkit result files (the layout of
        ``VOCdevkit/results``)."""
        return Path("data") / "results" / self.dataset / net_dir(net) / f"VOC{year}" / "Main"

    def heatmaps(self, net: str) -> Path:
        """``data/heatmaps/<dataset>/<net>``: heat map PNGs."""
        return Path("data") / "heatmaps" / self.dataset / net_dir(net)

    def metrics(self, net: str) -> Path:
        """``metrics/<dataset>/<net>``: DVC metrics of a net (JSON, kept in git)."""
        return Path("metrics") / self.dataset / net_dir(net)

    def tables(self) -> Path:
        """``tables/<dataset>``: the results in the paper's shape, every net (kept in git)."""
        return Path("tables") / self.dataset

    def plots(self, net: str) -> Path:
        """``plots/<dataset>/<net>``: DVC plots of a net (kept in git)."""
        return Path("plots") / self.dataset / net_dir(net)


def _training_file(kind: str) -> str:
    """The JSON file name of a kind's training metrics and per-epoch log."""
    if kind == "head":
        return "train.json"
    return f"{kind}.json" if kind.startswith("action-") else f"train-{kind}.json"
