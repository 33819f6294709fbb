"""What DVC's cache costs on disk, option by option, on a small project (the `tiny` net, a
demo of 12 + 6 images at 64 px): the outputs' bytes, what `.dvc/cache` adds, and the seconds
of a forced re-run of a persisted stage with nothing left to compute (`sample`: DVC
unprotects its outputs first, which copies them back out of the cache when they are links).

    python benchmarks/dvc_cache.py [--workdir /tmp/voc-transfer-dvc-cache]

Options: `uncached` (this project's dvc.yaml: every output `cache: false`), `copy` (the same
outputs cached, DVC's default link type: reflink, else copy), `hardlink` (cached, `cache.type
hardlink`). Bytes are counted once per inode, as `du` does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
OPTIONS = ("uncached", "copy", "hardlink")
OUTPUTS = ("data", "manifests")


def disk_bytes(*roots: Path) -> int:
    """Bytes of the regular files under `roots`, each inode counted once."""
    seen, total = set(), 0
    for root in roots:
        for path in root.rglob("*") if root.exists() else []:
            info = path.lstat()
            if path.is_file() and not path.is_symlink() and (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_size
    return total


def dvc(project: Path, *args: str) -> None:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=project, env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"dvc {' '.join(args)} failed in {project}:\n{done.stderr[-2000:]}")


def cached(out: str | dict) -> str | dict:
    """An entry of a stage's ``outs`` with DVC's cache on (its other settings kept)."""
    if isinstance(out, str):
        return out
    ((path, settings),) = out.items()
    settings = {k: v for k, v in settings.items() if k != "cache"}
    return {path: settings} if settings else path


def make_project(root: Path, option: str) -> Path:
    """A DVC project of this repository's code and dvc.yaml, small params, the cache `option`."""
    project = root / option
    shutil.rmtree(project, ignore_errors=True)
    for name in ("pipeline", "stages"):
        shutil.copytree(REPO / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())
    if option != "uncached":  # every stage output cached; metrics and plots stay in git
        for stage in stages["stages"].values():
            body = stage.get("do", stage)
            body["outs"] = [cached(out) for out in body.get("outs", [])]
    (project / "dvc.yaml").write_text(yaml.safe_dump(stages, sort_keys=False))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["demo"].update(n_trainval=12, n_test=6, n_action_trainval=4, n_action_test=2)
    params["tiling"]["patch_size"] = 64
    params["features"].update(nets=["tiny"], device="cpu")
    params["heatmaps"]["images"] = 1
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    dvc(project, "init", "--no-scm", "-q")
    if option == "hardlink":
        dvc(project, "config", "cache.type", "hardlink")
    return project


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/voc-transfer-dvc-cache"))
    args = parser.parse_args()
    print("| option | outputs MB | .dvc/cache adds MB | disk / outputs | re-run of sample s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for option in OPTIONS:
        project = make_project(args.workdir, option)
        dvc(project, "repro", "-q")
        outputs = disk_bytes(*(project / name for name in OUTPUTS))
        total = disk_bytes(*(project / name for name in OUTPUTS), project / ".dvc" / "cache")
        started = time.perf_counter()
        dvc(project, "repro", "-q", "-f", "-s", "sample")
        rerun = time.perf_counter() - started
        print(
            f"| {option} | {outputs / 1e6:.1f} | {(total - outputs) / 1e6:.1f} | "
            f"{total / outputs:.2f} | {rerun:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
