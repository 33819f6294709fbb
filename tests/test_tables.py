"""Sealed Parquet files: every flipped bit of a manifest is refused in one line or changes
nothing, and a damaged manifest names the stage that rewrites it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core.errors import PipelineError
from pipeline.core.sealed_tables import read_parquet, table_digest, write_parquet
from tests.cli import run_cli


def objects_like(n: int) -> pa.Table:
    rng = np.random.default_rng(0)
    return pa.table(
        {
            "image_id": [f"{i // 3:06d}" for i in range(n)],
            "class": rng.choice(["bird", "car", "dog"], n).tolist(),
            "label": pa.array(rng.integers(-1, 4, n), pa.int16()),
            "x0": pa.array(rng.random(n) * 500, pa.float32()),
            "difficult": rng.random(n) < 0.1,
        }
    )


def test_every_flipped_bit_is_refused_or_changes_nothing(tmp_path):
    # one flipped bit in objects.parquet changed 416 labels silently, before the seal
    path = tmp_path / "objects.parquet"
    table = objects_like(300)
    write_parquet(table, path)
    data = path.read_bytes()
    refused = 0
    for position in range(len(data)):
        damaged = bytearray(data)
        damaged[position] ^= 0x10
        path.write_bytes(bytes(damaged))
        try:
            read = read_parquet(path, "re-run `pipeline index`")
        except PipelineError as err:
            assert str(err).startswith(f"{path}: ") and "re-run `pipeline index`" in str(err)
            refused += 1
            continue
        assert read.equals(table), f"byte {position}: a different table read silently"
    assert refused > len(data) // 2


def test_the_digest_is_of_the_values_not_of_their_chunks():
    table = objects_like(50)
    rechunked = pa.concat_tables([table.slice(0, 20), table.slice(20)])
    assert rechunked.column(0).num_chunks == 2
    assert table_digest(rechunked) == table_digest(table)
    assert table_digest(table.slice(1)) != table_digest(table)


def test_a_damaged_manifest_footer_is_one_line_naming_the_stage_to_rerun(workdir):
    run_cli("index", "--split", "trainval")
    run_cli("tile", "--split", "trainval")
    path = Path("manifests/test-voc/trainval/objects.parquet")
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF  # inside the footer
    path.write_bytes(bytes(data))
    done = run_cli("tile", "--split", "trainval", check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert (
        line.startswith(f"error: {path}: ") and "re-run `pipeline index --split trainval`" in line
    )
    assert f"{path}: " in run_cli("verify", check=False).stderr


@pytest.mark.parametrize("name", ["images.parquet", "patches.parquet"])
def test_a_manifest_written_by_other_means_is_refused(workdir, name):
    run_cli("index", "--split", "trainval")
    run_cli("tile", "--split", "trainval")
    path = Path("manifests/test-voc/trainval") / name
    pq.write_table(pq.read_table(path).replace_schema_metadata(None), path)
    with pytest.raises(PipelineError, match="not written by this version"):
        read_parquet(path, "re-run")


def test_a_list_column_reads_back_under_its_digest(tmp_path):
    # Parquet renames a list's item field (item -> element): the same column
    table = pa.table({"actions": pa.array([["jumping"], [], ["reading", "walking"]])})
    write_parquet(table, tmp_path / "persons.parquet")
    assert read_parquet(tmp_path / "persons.parquet", "re-run").column(0).to_pylist() == [
        ["jumping"],
        [],
        ["reading", "walking"],
    ]
