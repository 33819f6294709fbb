"""What every stage shares: params, the directory layout, logging, progress and bad-input
bookkeeping. Only `stages/` knows params.yaml and where files live."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from joblib import Parallel, delayed
from tqdm import tqdm

from pipeline.atomic import write_json
from pipeline.errors import PipelineError

log = logging.getLogger("pipeline")
T = TypeVar("T")
R = TypeVar("R")

params_option = click.option(
    "--params",
    "params_path",
    default="params.yaml",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Parameters file.",
)
strict_option = click.option(
    "--strict", is_flag=True, help="Stop at the first bad input instead of skipping it."
)
nets_option = click.option(
    "--net",
    default=None,
    help="Backbone, e.g. effnet-lite0, alexnet, pre1512 (default: every net of features.nets).",
)
split_option = click.option(
    "--split", default=None, help="Image set (default: the training, then the evaluation split)."
)
jobs_option = click.option(
    "--jobs", type=int, default=None, help="Parallel workers (default: param `jobs`)."
)


def load_params(path: Path) -> dict[str, Any]:
    """Read the YAML parameters file; raises PipelineError when missing or malformed."""
    try:
        params = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: parameters file is missing") from None
    except yaml.YAMLError as err:
        raise PipelineError(f"{path}: malformed YAML ({err})") from None
    if not isinstance(params, dict):
        raise PipelineError(f"{path}: expected a mapping of parameter blocks")
    return params


def param(params: dict[str, Any], dotted: str) -> Any:
    """Return the parameter at `dotted` (e.g. ``tiling.patch_size``); PipelineError if absent."""
    node: Any = params
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            raise PipelineError(f"params.yaml: parameter {dotted} is missing")
        node = node[key]
    return node


def nets_of(params: dict[str, Any], net: str | None) -> list[str]:
    """The nets a stage runs for: the one given on the command line, else ``features.nets``."""
    return [net] if net else [str(n) for n in param(params, "features.nets")]


def dataset_root(params: dict[str, Any]) -> Path:
    """The VOC year directory (``.../VOCdevkit/VOC2007``) named by ``dataset.root``."""
    return Path(param(params, "dataset.root"))


def classes_of(params: dict[str, Any]) -> tuple[str, ...]:
    """The configured class names; label ``i + 1`` is ``classes[i]``."""
    return tuple(param(params, "dataset.classes"))


def train_split(params: dict[str, Any]) -> str:
    """The split the head is trained on (``dataset.train_split``: VOC2007 trainval, VOC2012
    train)."""
    return str(param(params, "dataset.train_split"))


def eval_split(params: dict[str, Any]) -> str:
    """The split that is scored and evaluated (``dataset.eval_split``: VOC2007 test, VOC2012
    val)."""
    return str(param(params, "dataset.eval_split"))


def splits_of(params: dict[str, Any], split: str | None) -> list[str]:
    """The splits a stage runs for: the one given on the command line, else the training then
    the evaluation split."""
    return [split] if split else [train_split(params), eval_split(params)]


def net_dir(net: str) -> str:
    """A net's name as a directory name (``torchvision:resnet50`` -> ``torchvision-resnet50``)."""
    return net.replace(":", "-")


@dataclass(frozen=True)
class Layout:
    """Where every output of one dataset lives. Paths carry the dataset name (``dataset.name``)
    so that the outputs of two datasets never overwrite each other."""

    dataset: str

    def manifests(self, split: str) -> Path:
        """``manifests/<dataset>/<split>``: images, objects and patches tables of a split."""
        return Path("manifests") / self.dataset / split

    def patches(self, split: str) -> Path:
        """``data/patches/<dataset>/<split>``: the HDF5 patch shards of a split."""
        return Path("data") / "patches" / self.dataset / split

    def features(self, net: str, split: str) -> Path:
        """``data/features/<dataset>/<net>/<split>``: the feature cache of a split."""
        return Path("data") / "features" / self.dataset / net_dir(net) / split

    def head(self, net: str) -> Path:
        """``data/heads/<dataset>/<net>/head.pt``: the trained adaptation layers."""
        return Path("data") / "heads" / self.dataset / net_dir(net) / "head.pt"

    def scores(self, net: str, split: str) -> Path:
        """``data/scores/<dataset>/<net>/<split>.parquet``: image scores per class."""
        return Path("data") / "scores" / self.dataset / net_dir(net) / f"{split}.parquet"

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

    def plots(self, net: str) -> Path:
        """``plots/<dataset>/<net>``: DVC plots of a net (kept in git)."""
        return Path("plots") / self.dataset / net_dir(net)


def layout_of(params: dict[str, Any]) -> Layout:
    """The output layout of the configured dataset."""
    return Layout(str(param(params, "dataset.name")))


MANIFEST_STAGE = {"images.parquet": "index", "objects.parquet": "index", "patches.parquet": "tile"}


def read_manifest(
    params: dict[str, Any], split: str, name: str, columns: list[str] | None = None
) -> pa.Table:
    """Read ``manifests/<dataset>/<split>/<name>`` (optionally some columns); PipelineError
    naming the stage to run when it is missing."""
    path = layout_of(params).manifests(split) / name
    if not path.is_file():
        raise PipelineError(
            f"{path}: manifest is missing; run `pipeline {MANIFEST_STAGE[name]} --split {split}`"
        )
    return pq.read_table(path, columns=columns)


def resolve_jobs(params: dict[str, Any], jobs: int | None) -> int:
    """The number of parallel workers: the CLI's ``--jobs``, else param ``jobs`` (default 1)."""
    return int(jobs if jobs is not None else params.get("jobs", 1))


def setup_logging(verbose: bool) -> None:
    """Log to stderr at INFO (DEBUG with `verbose`)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


@dataclass
class Problems:
    """Bad inputs met by a stage: each is logged as one line and counted; with `strict` the
    first one stops the stage."""

    strict: bool
    found: list[str] = field(default_factory=list)

    def report(self, error: PipelineError) -> None:
        """Record `error`; raise it again in strict mode."""
        if self.strict:
            raise error
        log.warning("skipped: %s", error)
        self.found.append(str(error))

    def write(self, path: Path, **summary: Any) -> None:
        """Write ``{"skipped": n, "problems": [...], **summary}`` as JSON and log the count."""
        write_json({"skipped": len(self.found), "problems": self.found, **summary}, path)
        if self.found:
            log.warning("%d input(s) skipped; see %s", len(self.found), path)


def _catching(fn: Callable[[T], R]) -> Callable[[T], R | PipelineError]:
    def call(item: T) -> R | PipelineError:
        try:
            return fn(item)
        except PipelineError as err:
            return err

    return call


def parallel_map(
    fn: Callable[[T], R], items: Iterable[T], *, jobs: int, desc: str, unit: str = "it"
) -> Iterator[R | PipelineError]:
    """Apply `fn` to every item with joblib over `jobs` processes, in order, with a progress bar.

    A PipelineError raised by `fn` is returned in place of the result, so that the caller decides
    whether to skip the item or stop.
    """
    items = list(items)
    call = _catching(fn)
    if jobs == 1:
        results: Iterable[R | PipelineError] = map(call, items)
    else:
        results = Parallel(n_jobs=jobs, return_as="generator")(delayed(call)(i) for i in items)
    yield from tqdm(results, total=len(items), desc=desc, unit=unit, dynamic_ncols=True)
