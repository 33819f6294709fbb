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


def manifest_dir(params: dict[str, Any], split: str) -> Path:
    """``manifests/<dataset>/<split>``."""
    return Path("manifests") / str(param(params, "dataset.name")) / split


MANIFEST_STAGE = {"images.parquet": "index", "objects.parquet": "index", "patches.parquet": "tile"}


def read_manifest(
    params: dict[str, Any], split: str, name: str, columns: list[str] | None = None
) -> pa.Table:
    """Read ``manifests/<dataset>/<split>/<name>`` (optionally some columns); PipelineError
    naming the stage to run when it is missing."""
    path = manifest_dir(params, split) / name
    if not path.is_file():
        raise PipelineError(
            f"{path}: manifest is missing; run `pipeline {MANIFEST_STAGE[name]} --split {split}`"
        )
    return pq.read_table(path, columns=columns)


def patches_dir(split: str) -> Path:
    """``data/patches/<split>``: the HDF5 patch shards of a split."""
    return Path("data") / "patches" / split


def net_dir(net: str) -> str:
    """A net's name as a directory name (``torchvision:resnet50`` -> ``torchvision-resnet50``)."""
    return net.replace(":", "-")


def features_dir(net: str, split: str) -> Path:
    """``data/features/<net>/<split>``: the feature cache of a split."""
    return Path("data") / "features" / net_dir(net) / split


def head_path(net: str) -> Path:
    """``data/heads/<net>/head.pt``: the trained adaptation layers."""
    return Path("data") / "heads" / net_dir(net) / "head.pt"


def scores_path(net: str, split: str) -> Path:
    """``data/scores/<net>/<split>.parquet``: image scores per class."""
    return Path("data") / "scores" / net_dir(net) / f"{split}.parquet"


def results_dir(net: str, year: int) -> Path:
    """``data/results/<net>/VOC<year>/Main``: devkit result files (copy into VOCdevkit/results)."""
    return Path("data") / "results" / net_dir(net) / f"VOC{year}" / "Main"


def heatmaps_dir(net: str) -> Path:
    """``data/heatmaps/<net>``: heat map PNGs."""
    return Path("data") / "heatmaps" / net_dir(net)


def metrics_dir(net: str) -> Path:
    """``metrics/<net>``: DVC metrics of a net (JSON, kept in git)."""
    return Path("metrics") / net_dir(net)


def plots_dir(net: str) -> Path:
    """``plots/<net>``: DVC plots of a net (kept in git)."""
    return Path("plots") / net_dir(net)


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
