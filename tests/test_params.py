"""The params schema: params.yaml is valid, and every rule it breaks is one line naming the file
actually read, the key and the rule."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from pipeline.core.errors import PipelineError
from pipeline.core.params import load_params, validate_params
from tests.cli import run_cli
from tests.conftest import REPO_PARAMS

RAW = yaml.safe_load(REPO_PARAMS.read_text())


def with_value(dotted: str, value: object) -> dict:
    raw = copy.deepcopy(RAW)
    *blocks, key = dotted.split(".")
    node = raw
    for block in blocks:
        node = node[block]
    node[key] = value
    return raw


def test_the_repository_params_are_valid_and_typed():
    params = load_params(REPO_PARAMS)
    assert params.tiling.patch_size == 128 and params.head.patience == 2
    assert params.layout.features("effnet-lite0", "test") == Path(
        "data/features/demo-voc2007/effnet-lite0/test"
    )
    assert params.splits(None) == ["trainval", "test"] and params.net_names("tiny") == ["tiny"]


@pytest.mark.parametrize(
    ("dotted", "value", "message"),
    [
        ("tiling.min_overlap", 1.0, "tiling.min_overlap: Input should be less than 1"),
        ("tiling.min_overlap", -1, "tiling.min_overlap: Input should be greater than or equal"),
        ("tiling.min_overlap", 0.99999, "tiling: scales and min_overlap give"),
        ("tiling.scales", [0], "tiling.scales.0: Input should be greater than or equal to 1"),
        ("tiling.scales", [1e-12], "tiling.scales.0: Input should be greater than or equal to 1"),
        ("tiling.scales", [float("inf")], "tiling.scales.0: Input should be a finite number"),
        ("scoring.k", float("inf"), "scoring.k: Input should be a finite number"),
        ("head.lr", float("nan"), "head.lr: Input should be a finite number"),
        ("dataset.name", "..", "dataset.name: String should match pattern"),
        ("dataset.train_split", "..", "dataset.train_split: String should match pattern"),
        ("dataset.eval_split", ".hidden", "dataset.eval_split: String should match pattern"),
        ("head.device", "tpu", "head.device: String should match pattern"),
        ("features.device", "cuda:x", "features.device: String should match pattern"),
        ("cluster.scheduler", "not a url at all", "cluster.scheduler: String should match"),
        ("tiling.scales", [], "tiling.scales: List should have at least 1 item"),
        ("tiling.patch_size", "big", "tiling.patch_size: Input should be a valid integer"),
        ("tiling.patch_size", 12.7, "tiling.patch_size: Input should be a valid integer"),
        ("sampling.background_fraction", 2, "sampling.background_fraction: Input should be less"),
        ("labeling.min_patch_cover", -1, "labeling.min_patch_cover: Input should be greater"),
        ("shards.compression", "zstd", "shards.compression: Input should be 'none', 'gzip', 'blo"),
        # h5py's LZF compresses the same pixels to other bytes from run to run (uninitialised
        # hash table): not offered, since shards must be byte-identical
        ("shards.compression", "lzf", "shards.compression: Input should be 'none', 'gzip', 'blo"),
        ("scoring.k", 0, "scoring.k: Input should be greater than 0"),
        ("head.val_fraction", 1.0, "head.val_fraction: Input should be less than 1"),
        ("head.layers", 4, "head.layers: Input should be 1, 2 or 3"),
        ("heatmaps.colormap", "jett", "heatmaps.colormap: unknown colormap 'jett'; did you mean"),
        ("dataset.eval_split", "trainval", "dataset: train_split and eval_split are both"),
        ("dataset.classes", ["cat", "cat"], "dataset.classes: lists cat more than once"),
        ("dataset.name", "a/b", "dataset.name: String should match pattern"),
        ("jobs", 0, "jobs: Input should be greater than or equal to 1"),
    ],
)
def test_a_value_that_breaks_a_rule_is_one_line_with_the_file_key_and_rule(dotted, value, message):
    with pytest.raises(PipelineError) as err:
        validate_params(with_value(dotted, value), "mine.yaml")
    text = str(err.value)
    assert text.startswith(f"mine.yaml: {message}") and "\n" not in text


def test_an_unknown_key_names_the_closest_known_one_and_a_missing_one_is_named():
    raw = copy.deepcopy(RAW)
    raw["head"]["batchsize"] = raw["head"].pop("batch_size")
    with pytest.raises(PipelineError, match="head.batchsize: unknown parameter; did you mean "):
        validate_params(raw, "params.yaml")
    raw = copy.deepcopy(RAW)
    del raw["scoring"]["k"]
    with pytest.raises(PipelineError, match=r"^params.yaml: scoring.k: parameter is missing$"):
        validate_params(raw, "params.yaml")


def test_the_cli_names_the_params_file_it_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(with_value("tiling.patch_size", 12.7)))
    done = run_cli("tile", "--params", "other.yaml", check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: other.yaml: tiling.patch_size: Input should be a valid integer")
    (tmp_path / "broken.yaml").write_text("tiling: [unclosed\n")
    done = run_cli("tile", "--params", "broken.yaml", check=False)
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: broken.yaml: malformed YAML")


def test_docs_params_md_is_the_schema_reference_and_documents_every_key():
    from pipeline.core.params_reference import reference

    text = reference()
    assert (REPO_PARAMS.parent / "docs" / "params.md").read_text() == text, (
        "docs/params.md is out of date: run "
        "`python -m pipeline.core.params_reference > docs/params.md`"
    )

    def keys(raw: dict, prefix: str = "") -> list[str]:
        found = []
        for key, value in raw.items():
            # a net's options are its family's, documented in docs/backbones.md (test_nets.py)
            block = isinstance(value, dict) and key != "images" and f"{prefix}{key}" != "nets"
            found += keys(value, f"{prefix}{key}.") if block else [f"{prefix}{key}"]
        return found

    for key in keys(RAW):
        assert f"| `{key}` |" in text, key
    assert "| None |" not in text  # every key has a meaning


def test_a_key_given_twice_is_refused_in_one_line(tmp_path):
    text = REPO_PARAMS.read_text().replace("  k: 5 ", "  k: 5\n  k: 50 ", 1)
    (tmp_path / "twice.yaml").write_text(text)
    with pytest.raises(PipelineError, match=r"twice.yaml: malformed YAML \(key 'k' given twice"):
        load_params(tmp_path / "twice.yaml")


def test_an_alias_bomb_is_refused_in_one_short_line(tmp_path):
    # nine levels of ten aliases: a billion class names from a few lines
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    text = "bomb:\n" + "".join(f"  {line}\n" for line in levels) + REPO_PARAMS.read_text()
    (tmp_path / "bomb.yaml").write_text(text)
    with pytest.raises(PipelineError, match="aliases expand past 100000 values") as err:
        load_params(tmp_path / "bomb.yaml")
    assert len(str(err.value)) < 500
