"""A scale rehearsal: every stage of `dvc repro` on VOC-sized synthetic datasets of N and 4N
images, with the wall time, peak memory (of the stage's whole process tree) and bytes written of
each stage, and the growth from N to 4N.

The datasets are the demo generator's (500x375-ish JPEGs, 1-6 objects, the VOCdevkit layout)
with N trainval and N test images (and N / 2 + N / 4 Action images), made by the pipeline's own
`demo` stage in a fresh clone of this project's last commit per size; the net is a fast one
(`tiny` at 32 px by default) so that a rehearsal fits in minutes on a CPU. Each stage instance
runs alone (`dvc repro --single-item`, in the order `dvc repro` would run them) while its
process tree is sampled every 0.1 s. Run on demand (the copies go to --workdir, several GB at
--n 400):

    python benchmarks/scale.py [--n 100] [--net tiny] [--size 32] [--workdir /tmp/scale]
        [--calibrate 6] [--calibrate-nets effnet-lite0 pre1512] [--calibrate-epochs 3]

It prints the growth table (4N over N): a stage whose memory does not grow with the dataset has
a memory ratio near 1; time and bytes grow with the images. Then, per net of --calibrate-nets, the
real profile (224 px) on K and 4K images (`--calibrate K`; trained layers capped at
--calibrate-epochs) gives each stage's seconds per image (per image and epoch for trained
layers), bytes per image and peak memory, extrapolated to VOC2007 and VOC2012 on this CPU and,
as an estimate from a published GPU rate, on one GPU (benchmarks/projection.py). `pre1512` runs
with seeded random weights written to the work directory: the AlexNet geometry of the paper's
network (FC 6144; torchvision's alexnet, FC 4096, costs less), whose ImageNet weights cannot be
downloaded here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import torch
import yaml
from projection import Measured, fit_line, projection_table, role

from pipeline.core.params import load_params
from pipeline.features.nets.alexnet import PRE1512_CONV, AlexNetFC7
from pipeline.features.nets.backbone import normalise
from pipeline.features.nets.registry import build_untrained

REPO = Path(__file__).resolve().parents[1]
SAMPLE_SECONDS = 0.1


@dataclass
class StageRun:
    """One stage instance of a rehearsal: seconds, peak memory in MiB of its process tree (see
    `tree_memory`), and the bytes of the files it wrote (its outputs' sizes after it ran)."""

    stage: str
    seconds: float
    peak_mib: float
    bytes_written: int


def stage_run(record: dict) -> StageRun:
    """A `StageRun` from a record of a --json file (which holds more fields)."""
    return StageRun(**{key: record[key] for key in StageRun.__dataclass_fields__})


def copy_project(destination: Path) -> None:
    """A fresh clone of this repository's last commit (git + DVC, no outputs) at
    `destination`."""
    subprocess.run(["git", "clone", "-q", str(REPO), str(destination)], check=True)


TRAINED = {  # trained stages and the metrics file (metrics/<dataset>/<net>/) with their epochs
    "fit-head": "train.json",
    "fit-windows": "train-windows.json",
    "fit-weak": "train-weak.json",
    "fit-cam": "train-cam.json",
    "fit-action-frozen": "action-frozen.json",
    "fit-action-update": "action-update.json",
    "fit-action-scratch": "action-scratch.json",
}


def set_size(project: Path, n: int, net: str, size: int, max_epochs: int | None = None) -> None:
    """Rewrite the project's params.yaml for `n` trainval and `n` test images with `net` at
    `size` px (trained layers capped at `max_epochs` when given). `pre1512` gets seeded random
    weights written beside the project."""
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["demo"].update(
        n_trainval=n, n_test=n, n_action_trainval=max(n // 2, 2), n_action_test=max(n // 4, 2)
    )
    params["features"]["nets"] = [net]
    params["tiling"]["patch_size"] = size
    if max_epochs is not None:
        params["head"]["max_epochs"] = max_epochs
        params["action"]["scratch"]["max_epochs"] = max_epochs
    if net == "pre1512":
        weights = project.parent / "pre1512-random.pt"
        if not weights.exists():
            torch.manual_seed(0)
            torch.save(AlexNetFC7(PRE1512_CONV, fc=6144, classes=1512).state_dict(), weights)
        params["nets"]["pre1512"] = {"weights": str(weights), "sha256": None}
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def stage_order(project: Path) -> list[str]:
    """The stage instances in the order `dvc repro` runs them."""
    dry = subprocess.run(
        ["dvc", "repro", "--dry", "--force"], cwd=project, capture_output=True, text=True,
        check=True,
    ).stdout  # fmt: skip
    return re.findall(r"Running stage '([^']+)'", dry)


def tree_memory(process: psutil.Process) -> int:
    """The bytes a process and all its descendants hold now: the sum of their proportional set
    sizes (PSS: a page shared by k processes counts 1/k in each). Not their RSS: a child forked
    and not yet exec'd (OpenVINO's conversion forks 25 times) shares its parent's pages, and its
    RSS counted them again (up to 1.5 GB more than the tree held, at random)."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # ended between listing and reading
            total += member.memory_full_info().pss
    return total


def outputs_bytes(project: Path, stage: str) -> int:
    """The bytes of a stage instance's outputs, as `dvc.lock` records them after its run."""
    locked = yaml.safe_load((project / "dvc.lock").read_text())["stages"][stage]
    return sum(int(out.get("size", 0)) for out in locked.get("outs", []))


def run_stage(project: Path, stage: str) -> StageRun:
    """Run one stage instance alone and measure it. Its log goes to a file, not a pipe: a
    pipe nobody reads while the stage runs fills up (64 KB of progress bars) and blocks it."""
    started = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(project))  # the copy's code, not an editable install's
    with tempfile.TemporaryFile("w+") as stderr:
        child = subprocess.Popen(
            ["dvc", "repro", "--single-item", stage], cwd=project, env=env,
            stdout=subprocess.DEVNULL, stderr=stderr, text=True,
        )  # fmt: skip
        watched, peak = psutil.Process(child.pid), 0
        while child.poll() is None:
            peak = max(peak, tree_memory(watched))
            time.sleep(SAMPLE_SECONDS)
        if child.returncode != 0:
            stderr.seek(0)
            raise SystemExit(f"{stage} failed in {project}:\n{stderr.read()[-20000:]}")
    seconds = time.perf_counter() - started
    return StageRun(stage, seconds, peak / 2**20, outputs_bytes(project, stage))


def rehearse(
    workdir: Path, n: int, net: str, size: int, max_epochs: int | None = None
) -> list[Measured]:
    """Make a project of size `n` under `workdir`, run every stage of it and measure each."""
    project = workdir / f"{net}-{size}-n{n}"
    shutil.rmtree(project, ignore_errors=True)
    copy_project(project)
    set_size(project, n, net, size, max_epochs)
    runs = []
    for stage in stage_order(project):
        run = run_stage(project, stage)
        print(f"  n={n} {stage}: {run.seconds:.1f} s, {run.peak_mib:.0f} MiB", flush=True)
        runs.append(run)
    return measured(project, runs)


def measured(project: Path, runs: list[StageRun]) -> list[Measured]:
    """The runs of a rehearsed project with the images of each stage's role (from its image
    sets) and the epochs its trained layers ran (from their metrics)."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    sets = project / params["demo"]["root"] / "ImageSets"
    images = {
        split: len((sets / "Main" / f"{split}.txt").read_text().split())
        for split in ("trainval", "test")
    }
    for split in ("trainval", "test"):
        listed = (sets / "Action" / f"{split}.txt").read_text().split()
        images[f"action-{split}"] = len(set(listed[0::2]))  # lines: image id, person index
    images["fixed"] = 0
    dataset, net = params["dataset"]["name"], params["features"]["nets"][0]
    metrics, timings = (project / kind / dataset / net for kind in ("metrics", "timings"))
    out = []
    for run in runs:
        name = run.stage.split("@")[0]
        trained: dict = {"epochs": 1}
        if name in TRAINED:
            recorded = json.loads((metrics / TRAINED[name]).read_text())
            timing = timings / TRAINED[name]  # copies made before timings/ kept it in metrics/
            times = json.loads(timing.read_text()) if timing.is_file() else recorded
            trained = {
                "epochs": recorded["epochs"],
                "work_seconds": times.get("train_seconds"),
                "epoch_seconds": times.get("epoch_seconds"),
                "examples": recorded["train_examples"] + recorded["val_examples"],
            }
        fields = {k: v for k, v in asdict(run).items() if k in StageRun.__dataclass_fields__}
        out.append(Measured(**fields, images=images[role(run.stage)], **trained))
    return out


def cpu_forward_rate(net: str, size: int, batch: int = 32, repeats: int = 3) -> float:
    """Patches/s of `net`'s forward pass (random weights) on this machine's CPU at `size` px:
    the best of `repeats` batches after one warm-up."""
    model, mean, std = build_untrained(
        net, load_params(REPO / "params.yaml").net_options(net), seed=0
    )
    model.eval()
    pixels = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8)
    best = float("inf")
    with torch.inference_mode():
        for attempt in range(repeats + 1):
            started = time.perf_counter()
            model(normalise(pixels, mean, std))
            if attempt:
                best = min(best, time.perf_counter() - started)
    return batch / best


def table(small: list[Measured], large: list[Measured], n: int) -> str:
    """The growth table (markdown) of two rehearsals of `n` and `4n` images."""
    rows = [
        f"| stage | s ({n}) | s ({4 * n}) | time x | MiB ({n}) | MiB ({4 * n}) | memory x "
        "| bytes/image |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    by_stage = {r.stage: r for r in large}
    for a in small:
        b = by_stage[a.stage]
        per_image = b.bytes_written / (2 * 4 * n)  # trainval + test images
        rows.append(
            f"| {a.stage} | {a.seconds:.1f} | {b.seconds:.1f} | {b.seconds / a.seconds:.2f} "
            f"| {a.peak_mib:.0f} | {b.peak_mib:.0f} "
            f"| {b.peak_mib / max(a.peak_mib, 1):.2f} | {per_image:,.0f} |"
        )
    return "\n".join(rows)


def generic(stage: str, net: str) -> str:
    """A stage instance's name with its net replaced by ``N``, to match it across nets."""
    return stage.replace(net, "N")


def memory_slopes(small: list[Measured], large: list[Measured], net: str) -> dict[str, float]:
    """MiB of peak memory per image of its role that each stage grew by from N to 4N."""
    slopes = {}
    for a, b in zip(small, large, strict=True):
        grown = b.images - a.images
        slopes[generic(a.stage, net)] = (b.peak_mib - a.peak_mib) / grown if grown else 0
    return slopes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="trainval (and test) images, >= 100")
    parser.add_argument("--net", default="tiny")
    parser.add_argument("--size", type=int, default=32, help="tiling.patch_size")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/voc-transfer-scale"))
    parser.add_argument("--json", type=Path, help="Write the measurements here.")
    parser.add_argument(
        "--growth-epochs",
        type=int,
        help="Cap the trained layers' epochs in the N / 4N runs (memory does not depend on them).",
    )
    parser.add_argument(
        "--growth-json", type=Path, help="Take the N / 4N runs from this --json of a past run."
    )
    parser.add_argument("--calibrate", type=int, default=6, help="K (0: no projection)")
    parser.add_argument(
        "--calibration-json",
        type=Path,
        help="Project from the calibrations of this --json of a past run (its copies, under "
        "--workdir, give the trained stages' own seconds) instead of running them.",
    )
    parser.add_argument("--calibrate-nets", nargs="+", default=["effnet-lite0", "pre1512"])
    parser.add_argument("--calibrate-epochs", type=int, default=3)
    parser.add_argument("--calibrate-size", type=int, default=224)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.growth_json:
        past = json.loads(args.growth_json.read_text())
        args.n, args.net = past["n"], past["net"]
        small = [Measured(**r) for r in past["small"]]
        large = [Measured(**r) for r in past["large"]]
    else:
        if args.n < 100:
            raise SystemExit("--n: at least 100 images, so that fixed costs do not hide growth")
        small = rehearse(args.workdir, args.n, args.net, args.size, args.growth_epochs)
        large = rehearse(args.workdir, 4 * args.n, args.net, args.size, args.growth_epochs)
    records = {
        "n": args.n,
        "net": args.net,
        "size": args.size,
        "small": [asdict(r) for r in small],
        "large": [asdict(r) for r in large],
    }
    print(table(small, large, args.n))
    slopes = memory_slopes(small, large, args.net)
    k, size, epochs = args.calibrate, args.calibrate_size, args.calibrate_epochs
    past = json.loads(args.calibration_json.read_text()) if args.calibration_json else {}
    for net in args.calibrate_nets if k else []:
        if f"calibration-{net}" in past:
            record = past[f"calibration-{net}"]
            k, size, rate = record["k"], record["size"], record["cpu_patches_per_s"]
            low, high = (
                measured(args.workdir / f"{net}-{size}-n{n}", [stage_run(r) for r in runs])
                for n, runs in ((k, record["small"]), (4 * k, record["large"]))
            )
        else:
            low = rehearse(args.workdir, k, net, size, epochs)
            high = rehearse(args.workdir, 4 * k, net, size, epochs)
            rate = cpu_forward_rate(net, size)
        records[f"calibration-{net}"] = {
            "k": k, "size": size, "cpu_patches_per_s": rate,
            "small": [asdict(r) for r in low], "large": [asdict(r) for r in high],
        }  # fmt: skip
        lines = [
            fit_line(a, b, slopes.get(generic(a.stage, net), 0.0))
            for a, b in zip(low, high, strict=True)
        ]
        print(f"\n{net} at {size} px: {k} and {4 * k} images, {rate:.1f} patches/s forward")
        max_epochs = yaml.safe_load((REPO / "params.yaml").read_text())["head"]["max_epochs"]
        print(projection_table(lines, net, rate, max_epochs, list(TRAINED)), flush=True)
        if args.json:  # after each net: a later failure keeps what was measured
            args.json.write_text(json.dumps(records, indent=2) + "\n")
    if args.json:
        args.json.write_text(json.dumps(records, indent=2) + "\n")
    sys.exit(0)


if __name__ == "__main__":
    main()
