"""Shards are checked before their data is used: a flipped byte is named in one line, the stage
that wrote the shard rewrites it on its next run, and the outputs equal the clean run's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from pipeline.core.atomic import exclusive
from pipeline.core.hashing import file_sha256
from pipeline.core.sealed_tables import write_parquet
from tests.cli import run_cli
from tests.conftest import Payload, flip_a_byte_in_the_middle

PATCHES = Path("data/patches/test-voc/trainval")
FEATURES = Path("data/features/test-voc/tiny")


def hashes(directory: Path) -> dict[str, str]:
    return {p.name: file_sha256(p) for p in sorted(directory.glob("*.h5"))}


def one_error_line(done) -> str:
    assert done.returncode == 1 and "Traceback" not in done.stderr
    return done.stderr.strip().splitlines()[-1]


def test_a_damaged_feature_shard_is_named_and_rewritten_by_the_features_stage(cached):
    clean = hashes(FEATURES / "trainval")
    shard = FEATURES / "trainval" / "shard-00001.h5"
    flip_a_byte_in_the_middle(shard)
    line = one_error_line(run_cli("fit-head", check=False))
    assert line == (
        f"error: {shard}: bytes do not match the SHA-256 in index.parquet (damaged or partly "
        "copied); re-run `pipeline features`, which rewrites it"
    )
    done = run_cli("features", "--net", "tiny", "--split", "trainval")
    assert f"1 of {len(clean)} shards to write" in done.stderr
    assert hashes(FEATURES / "trainval") == clean
    run_cli("fit-head")


def test_a_damaged_test_feature_shard_stops_evaluate(trained):
    shard = FEATURES / "test" / "shard-00000.h5"
    flip_a_byte_in_the_middle(shard)
    line = one_error_line(run_cli("evaluate", check=False))
    assert line.startswith(f"error: {shard}: bytes do not match the SHA-256")


def test_a_damaged_patch_shard_is_named_before_features_read_it_and_sample_repairs_it(cached):
    clean_patches, clean_features = hashes(PATCHES), hashes(FEATURES / "trainval")
    shard = PATCHES / "shard-00000.h5"
    flip_a_byte_in_the_middle(shard)
    (FEATURES / "trainval" / "shard-00000.h5").unlink()  # to be computed from the damaged one
    line = one_error_line(run_cli("features", "--split", "trainval", check=False))
    assert line.startswith(f"error: {shard}: bytes do not match") and "`pipeline sample`" in line
    done = run_cli("sample")
    assert f"1 of {len(clean_patches)} shards to write" in done.stderr
    assert hashes(PATCHES) == clean_patches
    done = run_cli("features", "--split", "trainval")
    assert f"1 of {len(clean_features)} shards to write" in done.stderr
    assert hashes(FEATURES / "trainval") == clean_features


def test_a_resumed_features_with_nothing_to_compute_reads_no_patch_shard(cached):
    # a kept feature shard was computed from verified bytes: the patch shards behind it are
    # neither hashed nor read again (at VOC size that is minutes per resumed run)
    clean = hashes(FEATURES / "trainval")
    for shard in PATCHES.glob("shard-*.h5"):
        shard.write_bytes(b"unreadable")
    done = run_cli("features", "--split", "trainval")
    assert f"0 of {len(clean)} shards to write" in done.stderr
    assert hashes(FEATURES / "trainval") == clean


def test_non_finite_descriptors_are_refused_naming_the_shard(cached):
    shard = FEATURES / "trainval" / "shard-00000.h5"
    with h5py.File(shard, "a") as f:
        f["features"][0, 0] = np.nan
    index = FEATURES / "trainval" / "index.parquet"
    table = pq.read_table(index).to_pandas()
    table.loc[table.shard == shard.name, "sha256"] = file_sha256(shard)  # consistent, but NaN
    write_parquet(pa.Table.from_pandas(table, preserve_index=False), index)
    line = one_error_line(run_cli("fit-head", check=False))
    assert line.startswith(f"error: {shard}: holds non-finite descriptors")


def test_a_second_writer_of_the_same_shards_is_told_who_holds_them(cached):
    with exclusive(PATCHES):
        line = one_error_line(run_cli("sample", check=False))
    assert line == (
        f"error: {PATCHES}: another pipeline run (pid {os.getpid()}) is writing it; wait for it "
        "to finish"
    )
    run_cli("sample")  # released: the next run goes ahead


def test_verify_names_what_is_missing_and_the_stage_that_writes_it(trained):
    missing = run_cli("verify", check=False).stderr
    assert "re-run `pipeline dense`" in missing
    assert "no trained layers; run `pipeline fit-weak --net tiny`" in missing
    assert "no trained layers; run `pipeline fit-windows --net tiny`" in missing


def test_verify_says_what_is_wrong_and_which_stage_to_rerun(all_layers):
    done = run_cli("verify")  # after dense, fit-head, fit-windows, fit-weak and fit-cam
    assert "all as their stages wrote them" in done.stderr
    rule = Path("data/dense/test-voc/tiny/test.rule.pt")
    rule.write_bytes(rule.read_bytes()[:64])
    assert f"{rule}: not a readable window rule" in run_cli("verify", check=False).stderr
    run_cli("dense", "--split", "test")
    flip_a_byte_in_the_middle(PATCHES / "shard-00001.h5")
    Path("manifests/test-voc/test/patches.parquet").write_bytes(b"PAR1 torn")
    done = run_cli("verify", check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert (
        f"{PATCHES / 'shard-00001.h5'}: bytes do not match the SHA-256 in index.parquet "
        "(damaged or partly copied); re-run `pipeline sample`, which rewrites it" in done.stderr
    )
    assert "test/patches.parquet: unreadable" in done.stderr
    assert "re-run `pipeline tile --split test`" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: verify: 2 problems in ")


def test_an_image_replaced_in_place_makes_exactly_its_shards_stale(workdir, edit_params):
    edit_params({"shards.patches_per_shard": 16})
    for stage in ("index", "tile", "sample"):
        run_cli(stage)
    run_cli("features", "--net", "tiny", "--split", "test")
    root = workdir / "VOCdevkit/VOC2007/JPEGImages"
    for image_id in ("000003", "000008"):  # a trainval and a test image, same size, new pixels
        path = root / f"{image_id}.jpg"
        Image.open(path).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(path, quality=90)
    patches = pq.read_table(PATCHES / "index.parquet").num_rows
    with_image = {
        name
        for name in (p.name for p in PATCHES.glob("shard-*.h5"))
        if "000003" in h5py.File(PATCHES / name)["image_id"].asstr()[:]
    }
    done = run_cli("sample")
    assert f"{len(with_image)} of {patches} shards to write" in done.stderr and with_image
    done = run_cli("features", "--net", "tiny", "--split", "test")
    assert "1 of 3 shards to write" in done.stderr  # one image per shard in these params


def test_a_crafted_head_checkpoint_is_refused_and_never_unpickled(cached, tmp_path):
    marker = tmp_path / "ran.txt"
    head = Path("data/heads/test-voc/tiny/head.pt")
    head.parent.mkdir(parents=True)
    torch.save({"state_dict": Payload(marker)}, head)
    line = one_error_line(run_cli("evaluate", check=False))
    assert line.startswith(f"error: {head}: not a readable checkpoint of trained layers")
    assert line.endswith("; re-run `pipeline fit-head --net tiny`")
    assert not marker.exists()


def test_two_sample_runs_at_once_end_with_an_index_that_matches_its_files(cached):
    shutil.rmtree(PATCHES)
    command = [sys.executable, "-m", "stages.cli", "sample"]
    runs = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    stderrs = [run.communicate()[1] for run in runs]  # not wait(): it never ends on a full pipe
    outcomes = [(run.returncode, stderr) for run, stderr in zip(runs, stderrs, strict=True)]
    for status, stderr in outcomes:
        assert "Traceback" not in stderr
        assert status == 0 or stderr.strip().splitlines()[-1].endswith(
            "is writing it; wait for it to finish"
        )
    assert any(status == 0 for status, _ in outcomes)
    index = pq.read_table(PATCHES / "index.parquet").to_pandas()
    assert index.sha256.tolist() == [file_sha256(PATCHES / name) for name in index.shard]
    assert sorted(p.name for p in PATCHES.iterdir()) == sorted([*index.shard, "index.parquet"])


def test_every_stage_refuses_to_write_outputs_another_run_is_writing(cached):
    for directory, command in (
        (Path("manifests/test-voc/trainval"), ("index", "--split", "trainval")),
        (Path("data/heads/test-voc/tiny"), ("fit-head",)),
    ):
        with exclusive(directory):
            line = one_error_line(run_cli(*command, check=False))
        assert line.startswith(f"error: {directory}: another pipeline run (pid ")


def test_a_damaged_shard_index_makes_the_stage_write_its_shards_again(cached):
    clean = hashes(PATCHES)
    (PATCHES / "index.parquet").write_bytes(b"PAR1 not an index")
    done = run_cli("sample")
    assert "index.parquet: unreadable" in done.stderr and "Traceback" not in done.stderr
    assert f"{len(clean)} of {len(clean)} shards to write" in done.stderr
    assert hashes(PATCHES) == clean
