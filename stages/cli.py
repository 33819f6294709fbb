"""The `pipeline` command: every stage as a click subcommand.

This is the only module that knows click. Each command validates its parameters file and calls
the `run` function of its stage module, imported only when the command runs, so that light
stages (index, tile) start without loading torch.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import click

from pipeline.core.errors import PipelineError
from pipeline.core.limits import LOWER_THE_NEED, address_space_limit
from pipeline.core.params import Params, load_params

STAGE_MODULES: dict[str, str] = {
    "code-digests": "stages.code_digests",
    "demo": "stages.demo",
    "index": "stages.index",
    "tile": "stages.tile",
    "sample": "stages.sample",
    "features": "stages.features",
    "dense": "stages.dense",
    "fit-head": "stages.fit_head",
    "fit-windows": "stages.fit_windows",
    "fit-weak": "stages.fit_weak",
    "fit-cam": "stages.fit_cam",
    "compare": "stages.compare",
    "table": "stages.table",
    "evaluate": "stages.evaluate",
    "heatmaps": "stages.heatmaps",
    "verify": "stages.verify",
    "action-samples": "stages.action_samples",
    "action-features": "stages.action_features",
    "fit-action-frozen": "stages.fit_action_frozen",
    "fit-action-update": "stages.fit_action_update",
    "fit-action-scratch": "stages.fit_action_scratch",
    "action-maps": "stages.action_maps",
}

params_option = click.option(
    "--params",
    "params_path",
    default="params.yaml",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Parameters file.",
)
verbose_option = click.option("-v", "--verbose", is_flag=True, help="Log more (DEBUG).")
split_option = click.option(
    "--split", default=None, help="Image set (default: the training, then the evaluation split)."
)
net_option = click.option(
    "--net",
    default=None,
    help="Backbone, e.g. effnet-lite0, alexnet, pre1512 (default: every net of features.nets).",
)
jobs_option = click.option(
    "--jobs", type=click.IntRange(min=1), default=None, help="Worker processes (default: jobs)."
)
head_device_option = click.option(
    "--device", default=None, help="auto, cpu, cuda (default: param head.device)."
)
trunk_device_option = click.option(
    "--device", default=None, help="auto, cpu, cuda, cuda:N (default: param features.device)."
)
batch_size_option = click.option(
    "--batch-size", type=click.IntRange(min=1), default=None, help="Default: features.batch_size."
)
workers_option = click.option(
    "--workers", default=None, help="DataLoader workers or auto (default: param features.workers)."
)
strict_option = click.option(
    "--strict", is_flag=True, help="Stop at the first bad input instead of skipping it."
)


def setup_logging(verbose: bool) -> None:
    """Log to stderr at INFO (DEBUG with `verbose`)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def stage(command: str) -> Callable[..., None]:
    """The `run` function of the stage behind `command`, imported now. PipelineError when a
    library it needs cannot be mapped into memory (an address-space limit, ``ulimit -v``, too
    low for torch or pyarrow), instead of Python's traceback of the import."""
    try:
        return importlib.import_module(STAGE_MODULES[command]).run
    except ImportError as err:
        if "failed to map segment" not in str(err):
            raise
        raise PipelineError(
            f"{command}: cannot load its libraries ({str(err).splitlines()[0]}): the process "
            f"may use {address_space_limit()} of address space (ulimit -v); raise that limit"
        ) from None


def start(params_path: Path, verbose: bool) -> Params:
    """Set up logging and load the validated parameters."""
    setup_logging(verbose)
    return load_params(params_path)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """voc-transfer: Pascal VOC patches and transferred CNN features (Oquab et al. 2014)."""


@cli.command("code-digests")
@verbose_option
def code_digests(verbose: bool) -> None:
    """Write data/code/<command>.sha256: the digests of the project modules each command runs
    (what the stages of dvc.yaml depend on for their code). Run it in the project's root."""
    setup_logging(verbose)
    stage("code-digests")(STAGE_MODULES)


@cli.command("demo")
@params_option
@verbose_option
def demo(params_path: Path, verbose: bool) -> None:
    """Write the synthetic demo dataset at demo.root (never anywhere else)."""
    stage("demo")(start(params_path, verbose))


@cli.command("index")
@split_option
@params_option
@strict_option
@jobs_option
@verbose_option
def index(
    split: str | None, params_path: Path, strict: bool, jobs: int | None, verbose: bool
) -> None:
    """Parse a split's annotations into manifests/<dataset>/<split>/{images,objects}.parquet."""
    params = start(params_path, verbose)
    stage("index")(params, split, strict=strict, jobs=jobs or params.jobs)


@cli.command("tile")
@split_option
@params_option
@verbose_option
def tile(split: str | None, params_path: Path, verbose: bool) -> None:
    """Tile and label a split's images into manifests/<dataset>/<split>/patches.parquet."""
    stage("tile")(start(params_path, verbose), split)


@cli.command("sample")
@click.option("--split", default=None, help="Image set (default: dataset.train_split).")
@params_option
@jobs_option
@verbose_option
def sample(split: str | None, params_path: Path, jobs: int | None, verbose: bool) -> None:
    """Write the training patches of a split to data/patches/<dataset>/<split>/shard-NNNNN.h5.

    Finished shards whose content would not change are kept, so an interrupted run resumes.
    """
    params = start(params_path, verbose)
    stage("sample")(params, split, jobs=jobs or params.jobs)


@cli.command("features")
@net_option
@split_option
@click.option(
    "--source",
    type=click.Choice(["auto", "shards", "images"]),
    default="auto",
    show_default=True,
    help="Read patch shards or cut from images; auto: shards for the training split (and any "
    "sampled split), images for the others.",
)
@trunk_device_option
@batch_size_option
@workers_option
@params_option
@verbose_option
def features(
    net: str | None,
    split: str | None,
    source: str,
    device: str | None,
    batch_size: int | None,
    workers: str | None,
    params_path: Path,
    verbose: bool,
) -> None:
    """Write descriptors of every patch of a split to data/features/<dataset>/<net>/<split>/.

    Finished shards whose inputs, net and weights are unchanged are kept, so an interrupted run
    resumes.
    """
    stage("features")(
        start(params_path, verbose), net, split,
        source=source, device=device, batch_size=batch_size, workers=workers,
    )  # fmt: skip


@cli.command("dense")
@net_option
@split_option
@trunk_device_option
@workers_option
@params_option
@verbose_option
def dense(
    net: str | None,
    split: str | None,
    device: str | None,
    workers: str | None,
    params_path: Path,
    verbose: bool,
) -> None:
    """Cache the trunk maps of every image of a split at every scale (dense mode) in
    data/dense/<dataset>/<net>/<split>/; finished shards are kept, so a run resumes."""
    stage("dense")(start(params_path, verbose), net, split, device=device, workers=workers)


def trained_layers_command(name: str, help_text: str) -> None:
    """Register `name`, a stage that trains layers on cached inputs, with its options."""

    @cli.command(name, help=help_text)
    @net_option
    @head_device_option
    @params_option
    @verbose_option
    def command(net: str | None, device: str | None, params_path: Path, verbose: bool) -> None:
        stage(name)(start(params_path, verbose), net, device=device)


trained_layers_command(
    "fit-head",
    "Train FCa + FCb on the cached features of dataset.train_split; write "
    "data/heads/<dataset>/<net>/head.pt.",
)
trained_layers_command(
    "fit-windows",
    "Train FCa + FCb, as fit-head does, on the windows of the dense maps of "
    "dataset.train_split where its sampled patches lie (no patch pixel is read); write "
    "data/heads/<dataset>/<net>/windows.pt.",
)
trained_layers_command(
    "fit-weak",
    "Train the adaptation layers from image labels alone over the dense maps of "
    "dataset.train_split (score = max over windows); write data/heads/<dataset>/<net>/weak.pt.",
)
trained_layers_command(
    "fit-cam",
    "Train one linear layer on whole training images (scale 1) from image labels; write "
    "data/heads/<dataset>/<net>/cam.pt.",
)


@cli.command("evaluate")
@net_option
@click.option("--split", default=None, help="Image set to evaluate (default: dataset.eval_split).")
@params_option
@verbose_option
def evaluate(net: str | None, split: str | None, params_path: Path, verbose: bool) -> None:
    """Score every image of a split and measure per-class AP and mAP (VOC devkit method)."""
    stage("evaluate")(start(params_path, verbose), net, split)


@cli.command("heatmaps")
@net_option
@click.option(
    "--image",
    "extra",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Any image file, tiled on the fly (repeatable); written to "
    "data/heatmaps/<dataset>/<net>/extra/.",
)
@params_option
@verbose_option
def heatmaps(net: str | None, extra: tuple[Path, ...], params_path: Path, verbose: bool) -> None:
    """Heat maps of the evaluation images chosen by params `heatmaps.images`, or of --image
    files."""
    stage("heatmaps")(start(params_path, verbose), net, extra)


@cli.command("compare")
@net_option
@params_option
@verbose_option
def compare(net: str | None, params_path: Path, verbose: bool) -> None:
    """Patches 2014, dense patches, dense windows, weak max-pool and full image + CAM on the
    evaluation split: mAP, pointing, CorLoc (metrics), training and test time (timings/);
    pictures in data/compare/<dataset>/<net>/."""
    stage("compare")(start(params_path, verbose), net)


@cli.command("table")
@params_option
@verbose_option
def table(params_path: Path, verbose: bool) -> None:
    """The results of every net in the paper's shape (a row per net and method, a column per
    class, mAP last) in tables/<dataset>/: classification and action, Markdown and CSV."""
    stage("table")(start(params_path, verbose))


@cli.command("action-samples")
@split_option
@params_option
@strict_option
@jobs_option
@verbose_option
def action_samples(
    split: str | None, params_path: Path, strict: bool, jobs: int | None, verbose: bool
) -> None:
    """Read the persons of an Action split (ImageSets/Action) into
    manifests/<dataset>/action/<split>/persons.parquet and cut one centred, mirror-padded patch
    per person into data/action-patches/<dataset>/<split>/."""
    params = start(params_path, verbose)
    stage("action-samples")(params, split, strict=strict, jobs=jobs or params.jobs)


@cli.command("action-features")
@net_option
@split_option
@trunk_device_option
@batch_size_option
@workers_option
@params_option
@verbose_option
def action_features(
    net: str | None,
    split: str | None,
    device: str | None,
    batch_size: int | None,
    workers: str | None,
    params_path: Path,
    verbose: bool,
) -> None:
    """Describe the person patches of a split: FC7 into data/action-features/, the input of
    FC6 (when the net has one) into data/action-below-fc6/; an interrupted run resumes."""
    stage("action-features")(
        start(params_path, verbose), net, split,
        device=device, batch_size=batch_size, workers=workers,
    )  # fmt: skip


@cli.command("fit-action")
@net_option
@click.option(
    "--variant",
    type=click.Choice(["frozen", "update", "scratch"]),
    default="frozen",
    show_default=True,
    help="frozen: FCa + FCb on FC7; update: FC6 re-trained too (PRE-1512U); scratch: the whole "
    "net from random weights (NO PRETRAIN).",
)
@head_device_option
@params_option
@verbose_option
def fit_action(
    net: str | None, variant: str, device: str | None, params_path: Path, verbose: bool
) -> None:
    """Train one variant of the action task on dataset.train_split's persons and evaluate it
    on dataset.eval_split's (AP per action, VOC2012 rule)."""
    stage(f"fit-action-{variant}")(start(params_path, verbose), net, device=device)


@cli.command("action-maps")
@net_option
@params_option
@verbose_option
def action_maps(net: str | None, params_path: Path, verbose: bool) -> None:
    """Maps of every action over the whole patch grid of the first action.map_images
    evaluation images (frozen head) into data/action-maps/<dataset>/<net>/."""
    stage("action-maps")(start(params_path, verbose), net)


@cli.command("verify")
@params_option
@verbose_option
def verify(params_path: Path, verbose: bool) -> None:
    """Check every manifest, shard and head of the dataset; name what is wrong and the stage
    to re-run (exit status 1 when anything is)."""
    stage("verify")(start(params_path, verbose))


def main() -> None:
    """Run the CLI; a PipelineError is printed as one line on stderr with exit status 1."""
    try:
        cli.main(standalone_mode=False)
    except PipelineError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(1)
    except MemoryError:
        click.echo(
            f"error: out of memory (address space: {address_space_limit()}); "
            f"{LOWER_THE_NEED}, or raise the limit",
            err=True,
        )
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
