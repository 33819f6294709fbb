"""What the README tests share: the README's bash blocks, devkits as users have them (read-only,
without the demo's marker), a git checkout of the repository, and running a block in it.

Each README recipe is tested in a module of its own (`test_readme_voc2007.py`,
`test_readme_voc2012.py`), a unit the xdist scheduler may give to either worker."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.action.persons import VOC_ACTIONS
from pipeline.data.image_sets import read_image_set
from pipeline.data.synthetic_devkit import MARKER, generate_demo
from tests.devkit import devkit_ap

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
PLACEHOLDER = "/path/to/VOCdevkit"
# a few VOC classes: the recipes list all 20, so most have no positive (AP null) as in a subset
CLASSES = ("bird", "car", "dog", "person")


def bash_block(text: str, needle: str) -> str:
    """The one fenced bash block of a Markdown `text` that contains `needle`."""
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    (block,) = [b for b in blocks if needle in b]
    return block


def readme_block(year_dir: str) -> str:
    """The README's fenced bash block that names ``/path/to/VOCdevkit/<year_dir>``."""
    return bash_block(README, f"{PLACEHOLDER}/{year_dir}")


def make_real_devkit(root: Path, *, n_trainval: int, n_test: int, n_action: int = 0) -> None:
    """A devkit as a user has it: made by the generator, without the demo's marker, read-only;
    with `n_action` images of persons in ImageSets/Action (train, val) doing VOC's actions."""
    generate_demo(
        root, CLASSES, n_trainval=n_trainval, n_test=n_test, seed=3, actions=VOC_ACTIONS[:10],
        n_action_trainval=n_action,
    )  # fmt: skip
    (root / MARKER).unlink()
    for path in [root, *root.rglob("*")]:
        writable(path, False)


def devkit_and_checkout(tmp: Path, year_dir: str, **sizes: int) -> tuple[Path, Path, Path]:
    """A read-only devkit at ``tmp/VOCdevkit/<year_dir>`` (`make_real_devkit` with `sizes`)
    and a git checkout of the repository beside it: ``(devkits folder, devkit, project)``."""
    devkits = tmp / "VOCdevkit"
    make_real_devkit(devkits / year_dir, **sizes)
    return devkits, devkits / year_dir, git_project(tmp)


def writable(path: Path, write: bool) -> None:
    """Give the owner write permission on `path`, or take everyone's away."""
    mode, everyone = path.stat().st_mode, stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
    path.chmod(mode | stat.S_IWUSR if write else mode & ~everyone)


def git_project(tmp: Path) -> Path:
    """A clone of this repository's tracked files, as a user's checkout with git and DVC."""
    project = tmp / "project"
    files = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, project / name)
    small_sizes(project / "params.yaml")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "checkout"]):
        subprocess.run(["git", *args], cwd=project, env=GIT_ENV, check=True)
    return project


def small_sizes(path: Path) -> None:
    """Shrink, in the checkout's params.yaml, the sizes that the blocks leave to it and that the
    checks do not depend on: two scales instead of nine (the blocks' 224-pixel patches cost the
    same per patch; fewer patches and smaller dense maps), a short schedule for the trained
    layers, a demo of a few images (the VOC2012 block runs the demo stage too) and one action
    map. Every parameter a block sets is the block's."""
    params = yaml.safe_load(path.read_text())
    params["tiling"]["scales"] = [1.0, 2.0]
    params["head"]["max_epochs"] = 5
    params["action"]["scratch"]["max_epochs"] = 2
    params["action"]["map_images"] = 1
    params["demo"].update(n_trainval=2, n_test=1, n_action_trainval=2, n_action_test=1)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


GIT_ENV = dict(
    os.environ,
    PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    GIT_AUTHOR_NAME="test",
    GIT_AUTHOR_EMAIL="test@example.org",
    GIT_COMMITTER_NAME="test",
    GIT_COMMITTER_EMAIL="test@example.org",
)


def run_block(
    block: str, devkits: Path, project: Path, expected_warning: str | None = None
) -> None:
    """Run a README block in `project` with the devkits at `devkits`: it must succeed and print
    no WARNING line (DVC's or the pipeline's) but those containing `expected_warning`."""
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.replace(PLACEHOLDER, str(devkits))],
        cwd=project,
        env=GIT_ENV,
        capture_output=True,
        text=True,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    unexpected = [
        line
        for line in output.splitlines()
        if "WARNING" in line and (expected_warning is None or expected_warning not in line)
    ]
    assert not unexpected, "\n".join(unexpected[:10])


def check_evaluation(project: Path, root: Path, dataset: str, split: str, train: str) -> dict:
    """The metrics of the evaluation split exist, the devkit's AP from the written result files
    equals them, and the head never saw an image of the evaluation split."""
    net = "effnet-lite0"
    metrics = json.loads((project / f"metrics/{dataset}/{net}/{split}.json").read_text())
    assert metrics["images"] == len(read_image_set(root, split)) and metrics["unscored"] == 0
    assert metrics["mAP"] is not None
    year = int(dataset[-4:])
    results = project / f"data/results/{dataset}/{net}/VOC{year}/Main"
    for name, reported in metrics["ap"].items():
        if reported is None:
            continue
        from_files = devkit_ap(
            results / f"comp1_cls_{split}_{name}.txt",
            root / f"ImageSets/Main/{name}_{split}.txt",
            eleven_point=year < 2010,
        )
        assert from_files == pytest.approx(reported, abs=1e-9), name
    head = torch.load(project / f"data/heads/{dataset}/{net}/head.pt", weights_only=True)
    assert head["train_split"] == train
    assert set(head["train_images"]) <= set(read_image_set(root, train))
    assert not set(head["train_images"]) & set(read_image_set(root, split))
    return metrics
