"""The demo generator: exact VOCdevkit layouts, and it never replaces a directory it did not
make."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pipeline.core.errors import PipelineError
from pipeline.data.image_sets import read_class_image_set, read_image_set
from pipeline.data.synthetic_devkit import MARKER, generate_demo
from tests.cli import run_cli


def tree_digest(root: Path) -> str:
    """SHA-256 over every file's relative path and bytes under `root`."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_generate_demo_refuses_a_directory_it_did_not_create_and_leaves_it_untouched(tmp_path):
    real = tmp_path / "VOCdevkit" / "VOC2007"
    (real / "JPEGImages").mkdir(parents=True)
    (real / "JPEGImages" / "000005.jpg").write_bytes(b"a user's photo")
    (real / "notes.txt").write_text("mine")
    before = tree_digest(real)
    with pytest.raises(PipelineError) as err:
        generate_demo(real, ["cat"], n_trainval=2, n_test=1, seed=0)
    message = str(err.value)
    assert message.startswith(f"{real}: refusing to replace it") and MARKER in message
    assert "\n" not in message
    assert tree_digest(real) == before
    assert sorted(p.name for p in real.parent.iterdir()) == ["VOC2007"]  # no temporary left


def test_generate_demo_replaces_its_own_demo_and_fills_an_empty_directory(tmp_path):
    root = tmp_path / "VOC2007"
    root.mkdir()
    generate_demo(root, ["cat", "dog"], n_trainval=2, n_test=1, seed=0)
    first = tree_digest(root)
    generate_demo(root, ["cat", "dog"], n_trainval=2, n_test=1, seed=1)
    assert (root / MARKER).is_file() and tree_digest(root) != first


def test_the_demo_stage_writes_demo_root_only_and_refuses_a_real_dataset(workdir):
    real = workdir / "VOCdevkit" / "VOC2007"
    (real / MARKER).unlink()  # as in a real devkit
    before = tree_digest(real)
    run_cli("demo")  # params: demo.root is data/demo/..., dataset.root the copied devkit
    assert (workdir / "data/demo/VOCdevkit/VOC2007" / MARKER).is_file()
    assert tree_digest(real) == before
    params = (workdir / "params.yaml").read_text()
    (workdir / "params.yaml").write_text(
        params.replace("root: data/demo/VOCdevkit/VOC2007", f"root: {real}")
    )
    done = run_cli("demo", check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {real}: refusing to replace it")
    assert tree_digest(real) == before


def test_voc2012_layout_has_train_val_trainval_and_no_test(tmp_path):
    root = tmp_path / "VOC2012"
    splits = generate_demo(root, ["cat", "dog"], n_trainval=6, n_test=0, seed=0)
    assert sorted(splits) == ["train", "trainval", "val"]
    train, val = read_image_set(root, "train"), read_image_set(root, "val")
    assert not set(train) & set(val) and read_image_set(root, "trainval") == train + val
    assert not (root / "ImageSets/Main/test.txt").exists()
    assert set(read_class_image_set(root, "dog", "val")) == set(val)
    assert "<folder>VOC2012</folder>" in (root / "Annotations" / f"{val[0]}.xml").read_text()
