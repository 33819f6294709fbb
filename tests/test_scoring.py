from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipeline.core.equal_runs import equal_runs, string_runs
from pipeline.core.errors import PipelineError
from pipeline.core.params import load_params
from pipeline.data.manifests import read_manifest
from pipeline.features.feature_cache import feature_cache_shards, read_feature_cache
from pipeline.scoring.heatmaps import heat_maps
from pipeline.scoring.image_scores import (
    SplitScores,
    image_probabilities,
    image_scores,
    patch_probabilities,
)
from pipeline.scoring.localization import peak_inside
from pipeline.scoring.methods import patch_method, split_patches
from pipeline.trained.head import build_head


def test_image_score_is_the_mean_of_probabilities_to_the_power_k():
    probabilities = np.array([[0.5, 0.5, 0.0], [0.0, 0.2, 0.8], [1.0, 0.0, 0.0]])
    image = np.array([0, 0, 1])
    scores = image_scores(probabilities, image, 2, k=2)
    np.testing.assert_allclose(scores, [[(0.25 + 0.04) / 2, 0.64 / 2], [0.0, 0.0]])
    np.testing.assert_allclose(image_scores(probabilities, image, 2, k=1)[0], [0.35, 0.4])


def test_heat_map_pixel_is_the_mean_over_the_patches_covering_it():
    # two 4x4 patches of a 6x4 image overlapping on columns 2-3
    boxes = np.array([[0, 0, 4], [2, 0, 4]], float)
    probabilities = np.array([[0.0, 1.0], [1.0, 0.0]])
    maps = heat_maps(probabilities, boxes, width=6, height=4)
    assert maps.shape == (2, 4, 6)
    np.testing.assert_allclose(maps[1, 0], [1, 1, 0.5, 0.5, 0, 0])
    np.testing.assert_allclose(maps[0] + maps[1], 1.0)


def test_heat_map_uses_pixel_centres_for_fractional_boxes():
    boxes = np.array([[0.4, 0.0, 2.2]])  # covers centres 0.5, 1.5, 2.5 -> pixels 0, 1, 2
    maps = heat_maps(np.array([[0.0, 1.0]]), boxes, width=4, height=3)
    np.testing.assert_allclose(maps[1, 0], [1, 1, 1, 0])
    np.testing.assert_allclose(maps[1, 2], [0, 0, 0, 0])  # row 2 (centre 2.5) is outside


def test_peak_inside_a_box():
    heat = np.zeros((10, 10))
    heat[7, 2] = 1.0
    assert peak_inside(heat, np.array([[0, 5, 4, 10]]))
    assert not peak_inside(heat, np.array([[3, 0, 10, 10], [0, 0, 10, 7]]))


def test_split_scores_added_part_by_part_equal_the_scores_at_once():
    # evaluate adds a VOC test set's patches shard by shard instead of holding them all
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(4), size=300)
    ids = ["a", "b", "c", "d"]
    patch_images = np.array(ids)[np.sort(rng.integers(0, 3, 300))]  # image d has no patch
    index = np.array([ids.index(i) for i in patch_images])
    for pool in ("mean", "max"):
        at_once = image_scores(probabilities, index, 4, k=5, pool=pool)
        split = SplitScores(ids, 5, pool, Path("cache"))
        for start in range(0, 300, 64):
            split.add(probabilities[start : start + 64], patch_images[start : start + 64])
        scores, counts = split.result()
        assert np.array_equal(scores[:3], at_once[:3])  # bit for bit
        assert np.isneginf(scores[3]).all()
        assert counts.tolist() == np.bincount(index, minlength=4).tolist()
    with pytest.raises(PipelineError, match="cache: holds image 'e' that the split does not list"):
        split.add(probabilities[:1], ["e"])


def test_runs_of_a_string_column_cross_its_chunks_and_match_the_runs_of_its_values():
    values = ["000005", "000005", "000007", "000007", "000007", "000005", "2008_000001"]
    column = pa.chunked_array([values[:3], values[3:4], [], values[4:]])
    runs = string_runs(column)
    assert runs == [("000005", 0, 2), ("000007", 2, 5), ("000005", 5, 6), ("2008_000001", 6, 7)]
    assert [(s, e) for _, s, e in runs] == equal_runs(np.array(values))
    assert string_runs(pa.chunked_array([], pa.string())) == []


def test_image_probabilities_join_an_image_split_across_shards(cached):
    # the training split's shards hold 512 patches each, cut through images
    layout = load_params(Path("params.yaml")).layout
    shards = feature_cache_shards(layout.features("tiny", "trainval"))
    everything, _ = read_feature_cache(layout.features("tiny", "trainval"))
    head = build_head(everything["features"].shape[1], 7, seed=0)
    expected = patch_probabilities(head, everything["features"])
    runs = equal_runs(everything["image_id"])
    images = list(image_probabilities(head, shards))
    assert len(shards) > 1 and len(images) == len(runs)
    for rows, (start, end) in zip(images, runs, strict=True):
        assert (rows.image_id, rows.first) == (everything["image_id"][start], start)
        # the same numbers, to rounding: a linear layer's float results may depend on how many
        # rows its batch holds (MKL picks its kernel by size on some CPUs)
        np.testing.assert_allclose(rows.probabilities, expected[start:end], rtol=1e-5, atol=1e-7)


def test_the_2014_method_maps_each_image_of_the_split_and_names_a_cache_of_other_rows(cached):
    layout = load_params(Path("params.yaml")).layout
    manifests = layout.manifests("test")
    table = read_manifest(manifests, "patches.parquet").to_pandas()
    images = read_manifest(manifests, "images.parquet").to_pandas()
    sizes = {row.image_id: (row.width, row.height) for row in images.itertuples()}
    patches = split_patches(manifests)
    ids = table["image_id"].to_numpy()
    assert patches.images == [(ids[s], s, e) for s, e in equal_runs(ids)]
    np.testing.assert_array_equal(patches.boxes, table[["x0", "y0", "side"]].to_numpy())
    shards = feature_cache_shards(layout.features("tiny", "test"))
    dim = read_feature_cache(layout.features("tiny", "test"))[0]["features"].shape[1]
    head = build_head(dim, 5, seed=0)  # the demo's 4 classes and background
    scored = list(patch_method(head, shards, patches, sizes, k=5, pool="mean"))
    assert [s.image_id for s in scored] == list(dict.fromkeys(ids))
    width, height = sizes[scored[0].image_id]
    assert scored[0].maps.shape == (4, height, width)
    (a, *a_rows), (b, *b_rows), *rest = patches.images
    last_left_out = dataclasses.replace(patches, images=patches.images[:-1])
    first_two_swapped = dataclasses.replace(patches, images=[(b, *a_rows), (a, *b_rows), *rest])
    for other in (last_left_out, first_two_swapped):
        with pytest.raises(PipelineError, match="rows do not match the split's patches.parquet"):
            list(patch_method(head, shards, other, sizes, k=5, pool="mean"))
