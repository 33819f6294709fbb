"""A scale rehearsal: every stage of `dvc repro` on VOC-sized synthetic datasets of N and 4N
images, with the wall time, peak RSS (of the stage's whole process tree) and bytes written of
each stage, and the growth from N to 4N.

The datasets are the demo generator's (500x375-ish JPEGs, 1-6 objects, the VOCdevkit layout)
with N trainval and N test images (and N / 2 + N / 4 Action images), made by the pipeline's own
`demo` stage in a fresh clone of this project's last commit per size; the net is a fast one
(`tiny` at 32 px by default) so that a rehearsal fits in minutes on a CPU. Each stage instance
runs alone (`dvc repro --single-item`, in the order `dvc repro` would run them) while its
process tree is sampled every 0.1 s. Run on demand (the copies go to --workdir, several GB at
--n 400):

    python benchmarks/scale.py [--n 100] [--net tiny] [--size 32] [--workdir /tmp/scale]

It prints one table per size and the growth table (4N over N): a stage whose memory does not
grow with the dataset has an RSS ratio near 1; time and bytes grow with the images.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
SAMPLE_SECONDS = 0.1


@dataclass
class StageRun:
    """One stage instance of a rehearsal: seconds, peak RSS in MiB of its process tree, and the
    bytes of the files it wrote (its outputs' sizes after it ran)."""

    stage: str
    seconds: float
    peak_rss_mib: float
    bytes_written: int


def copy_project(destination: Path) -> None:
    """A fresh clone of this repository's last commit (git + DVC, no outputs) at
    `destination`."""
    subprocess.run(["git", "clone", "-q", str(REPO), str(destination)], check=True)


def set_size(project: Path, n: int, net: str, size: int) -> None:
    """Rewrite the project's params.yaml for `n` trainval and `n` test images with `net`."""
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["demo"].update(
        n_trainval=n, n_test=n, n_action_trainval=max(n // 2, 2), n_action_test=max(n // 4, 2)
    )
    params["features"]["nets"] = [net]
    params["tiling"]["patch_size"] = size
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def stage_order(project: Path) -> list[str]:
    """The stage instances in the order `dvc repro` runs them."""
    dry = subprocess.run(
        ["dvc", "repro", "--dry", "--force"], cwd=project, capture_output=True, text=True,
        check=True,
    ).stdout  # fmt: skip
    return re.findall(r"Running stage '([^']+)'", dry)


def tree_rss(process: psutil.Process) -> int:
    """The resident bytes of a process and all its descendants now."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # ended between listing and reading
            total += member.memory_info().rss
    return total


def outputs_bytes(project: Path, stage: str) -> int:
    """The bytes of a stage instance's outputs, as `dvc.lock` records them after its run."""
    locked = yaml.safe_load((project / "dvc.lock").read_text())["stages"][stage]
    return sum(int(out.get("size", 0)) for out in locked.get("outs", []))


def run_stage(project: Path, stage: str) -> StageRun:
    """Run one stage instance alone and measure it."""
    started = time.perf_counter()
    child = subprocess.Popen(
        ["dvc", "repro", "--single-item", stage], cwd=project,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    watched, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        peak = max(peak, tree_rss(watched))
        time.sleep(SAMPLE_SECONDS)
    if child.returncode != 0:
        raise SystemExit(f"{stage} failed in {project}:\n{child.stderr.read()}")
    seconds = time.perf_counter() - started
    return StageRun(stage, seconds, peak / 2**20, outputs_bytes(project, stage))


def rehearse(workdir: Path, n: int, net: str, size: int) -> list[StageRun]:
    """Make a project of size `n` under `workdir` and run every stage of it."""
    project = workdir / f"n{n}"
    shutil.rmtree(project, ignore_errors=True)
    copy_project(project)
    set_size(project, n, net, size)
    runs = []
    for stage in stage_order(project):
        run = run_stage(project, stage)
        print(f"  n={n} {stage}: {run.seconds:.1f} s, {run.peak_rss_mib:.0f} MiB", flush=True)
        runs.append(run)
    return runs


def table(small: list[StageRun], large: list[StageRun], n: int) -> str:
    """The growth table (markdown) of two rehearsals of `n` and `4n` images."""
    rows = [
        f"| stage | s ({n}) | s ({4 * n}) | time x | MiB ({n}) | MiB ({4 * n}) | RSS x "
        "| bytes/image |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    by_stage = {r.stage: r for r in large}
    for a in small:
        b = by_stage[a.stage]
        per_image = b.bytes_written / (2 * 4 * n)  # trainval + test images
        rows.append(
            f"| {a.stage} | {a.seconds:.1f} | {b.seconds:.1f} | {b.seconds / a.seconds:.2f} "
            f"| {a.peak_rss_mib:.0f} | {b.peak_rss_mib:.0f} "
            f"| {b.peak_rss_mib / max(a.peak_rss_mib, 1):.2f} | {per_image:,.0f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="trainval (and test) images, >= 100")
    parser.add_argument("--net", default="tiny")
    parser.add_argument("--size", type=int, default=32, help="tiling.patch_size")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/voc-transfer-scale"))
    parser.add_argument("--json", type=Path, help="Also write the measurements here.")
    args = parser.parse_args()
    if args.n < 100:
        raise SystemExit("--n: at least 100 images, so that fixed costs do not hide growth")
    args.workdir.mkdir(parents=True, exist_ok=True)
    small = rehearse(args.workdir, args.n, args.net, args.size)
    large = rehearse(args.workdir, 4 * args.n, args.net, args.size)
    print(table(small, large, args.n))
    if args.json:
        records = {
            "n": args.n,
            "net": args.net,
            "size": args.size,
            "small": [asdict(r) for r in small],
            "large": [asdict(r) for r in large],
        }
        args.json.write_text(json.dumps(records, indent=2) + "\n")  # fmt: skip
    sys.exit(0)


if __name__ == "__main__":
    main()
