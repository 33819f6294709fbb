"""Dense mode: trunk maps per image and scale whose windows are the patch descriptors."""

from __future__ import annotations

import logging

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.errors import PipelineError
from pipeline.data.cutting import cut_patches
from pipeline.data.images import load_rgb
from pipeline.data.synthetic_devkit import generate_demo
from pipeline.data.tiling import patch_grid
from pipeline.features.dense_cache import (
    ImageMaps,
    chosen_windows,
    image_windows,
    read_window_rule,
    window_boxes,
    write_dense_shard,
    write_window_rule,
)
from pipeline.features.dense_extractor import aligned, resized_scales, trunk_maps
from pipeline.features.nets.backbone import normalise
from pipeline.features.nets.registry import build_backbone
from pipeline.features.patch_extractor import configured_extractor
from pipeline.features.runtimes import as_float16, native_bfloat16_here
from pipeline.features.trunks import PooledFullyConnected, adaptive_pool_matrix, fold_batch_norms
from tests.conftest import net_options
from tests.test_nets import serve_torchvision_weights

CPU = torch.device("cpu")
PATCH_SIZES = {"tiny": 32, "effnet-lite0": 128, "alexnet": 224}


def backbone_for(name: str, monkeypatch):
    if name == "alexnet":
        import torchvision

        torch.manual_seed(0)
        serve_torchvision_weights(monkeypatch, torchvision.models.alexnet())
    return build_backbone(name, net_options(name))


def dense_image(extractor, image: np.ndarray, scales, size: int) -> ImageMaps:
    resized = resized_scales(image, scales, size)
    maps = [m.numpy() for m in trunk_maps(extractor, resized, size)]
    height, width = image.shape[:2]
    return ImageMaps("x", width, height, list(scales), [f for _, f in resized], maps)


@pytest.mark.parametrize("name", sorted(PATCH_SIZES))
def test_a_window_that_is_the_whole_resized_image_is_exactly_the_patch_descriptor(
    name, monkeypatch
):
    # a square image at scale 1 is one patch: resizing, trunk and window rule must give the
    # very numbers patch mode gives (both in float32, whatever `auto` picks on this CPU;
    # caches round both to float16)
    backbone = backbone_for(name, monkeypatch)
    size = PATCH_SIZES[name]
    image = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    extractor = configured_extractor(backbone, CPU, 1, "auto", "float32")
    maps = dense_image(extractor, image, [1.0], size)
    rule = backbone.dense_trunk().window_rule(size)
    assert maps.maps[0].shape[1:] == rule.window
    from_map = image_windows(rule, maps, CPU).descriptors
    with torch.inference_mode():
        pixels = torch.from_numpy(cut_patches(image, np.array([[0.0, 0.0, 300.0]]), size))
        from_patch = backbone.module(normalise(pixels, backbone.mean, backbone.std))
    assert from_map.shape == (1, backbone.dim)
    if extractor.whole_image_trunk[1]:  # effnet: batch norms folded into the convolutions
        torch.testing.assert_close(from_map, from_patch, rtol=1e-4, atol=1e-5)
    else:
        assert torch.equal(from_map, from_patch)


@pytest.mark.parametrize("name", sorted(PATCH_SIZES))
def test_windows_chosen_by_number_are_those_of_all_windows(name, monkeypatch):
    # fit-windows computes only the windows its patches take: they must be the windows
    # dense scoring computes at those places, whichever scale and order they are asked in
    backbone = backbone_for(name, monkeypatch)
    size = PATCH_SIZES[name]
    image = np.random.default_rng(2).integers(0, 256, (260, 340, 3), dtype=np.uint8)
    extractor = configured_extractor(backbone, CPU, 4, "auto", "auto")
    maps = dense_image(extractor, image, [1.0, 1.6], size)
    rule = backbone.dense_trunk().window_rule(size)
    every = image_windows(rule, maps, CPU)
    assert len(set(every.scale_index.tolist())) == 2
    index = np.random.default_rng(3).permutation(len(every.descriptors))[:7]
    index = np.concatenate([index, [len(every.descriptors) - 1, 0]])
    chosen = chosen_windows(rule, maps, index, CPU)
    torch.testing.assert_close(chosen, every.descriptors[index], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="window numbers outside"):
        chosen_windows(rule, maps, np.array([len(every.descriptors)]), CPU)


def random_batch_norm(channels: int) -> nn.BatchNorm2d:
    norm = nn.BatchNorm2d(channels)
    norm.running_mean.uniform_(-1, 1)
    norm.running_var.uniform_(0.5, 2)
    norm.weight.data.uniform_(0.5, 1.5)
    norm.bias.data.uniform_(-1, 1)
    return norm.eval()


def test_batch_norms_are_folded_into_the_convolutions_before_them_only_when_that_is_exact():
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Conv2d(3, 8, 3), random_batch_norm(8), nn.ReLU()).eval()
    folded, done = fold_batch_norms(trunk)
    assert done and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(folded(x), trunk(x), rtol=1e-5, atol=1e-5)
    assert any(isinstance(m, nn.BatchNorm2d) for m in trunk.modules())  # the original kept

    class NormFirst(nn.Module):  # children listed conv, norm; run norm, conv
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.norm = nn.Conv2d(3, 3, 1), random_batch_norm(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(self.norm(x))

    other = NormFirst().eval()
    assert fold_batch_norms(other) == (other, False)


def test_fc6_over_any_window_is_adaptive_pooling_then_the_linear_layer():
    torch.manual_seed(0)
    fc6, fc7 = torch.nn.Linear(8 * 36, 16), torch.nn.Linear(16, 16)
    rule = PooledFullyConnected(6, [fc6, fc7])
    maps = torch.rand(2, 8, 9, 11)
    for window in [(6, 6), (3, 3), (8, 5)]:
        dense = rule(maps, window)
        i, j = 1, 2  # any window position
        crop = maps[:, :, i : i + window[0], j : j + window[1]]
        pooled = F.adaptive_avg_pool2d(crop, 6).flatten(1)
        expected = F.relu(fc7(F.relu(fc6(pooled))))
        torch.testing.assert_close(dense[:, :, i, j], expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(adaptive_pool_matrix(6, 6), torch.eye(6))


def test_padding_brings_every_length_to_a_patch_plus_whole_cells():
    assert aligned(128, 128, 32) == 128
    assert aligned(171, 128, 32) == 192
    assert aligned(160, 128, 32) == 160
    assert aligned(100, 128, 32) == 128


def test_window_boxes_step_one_cell_of_the_resized_image():
    boxes = window_boxes((6, 7), (4, 4), stride=32, factor=0.5, patch_size=128)
    assert boxes.shape == (3 * 4, 3)
    np.testing.assert_allclose(boxes[0], [0, 0, 256])
    np.testing.assert_allclose(boxes[1], [64, 0, 256])  # next column: one cell = 64 px here
    np.testing.assert_allclose(boxes[4], [0, 64, 256])  # next row


@pytest.fixture(scope="module")
def demo_images(tmp_path_factory) -> list[np.ndarray]:
    root = tmp_path_factory.mktemp("dense") / "VOC2007"
    generate_demo(root, ("aeroplane", "bicycle", "bird", "boat"), n_trainval=3, n_test=0, seed=3)
    return [load_rgb(p) for p in sorted((root / "JPEGImages").glob("*.jpg"))]


def test_dense_windows_agree_with_the_grid_patches_they_coincide_with(demo_images):
    """In dense mode a window's cells see the image around the patch where patch mode sees
    zero padding; effnet-lite0's receptive field is far wider than a 128-pixel patch, so the
    two descriptors are close, not equal. Measured here: mean cosine 0.81 (lowest 0.64) at the
    patch's own window, 0.74 at the windows one cell aside (they share 3/4 of the patch), and
    the own window is the most similar of its scale for 77% of the patches. The test asks for
    a mean above 0.7 and the own window most similar for more than 60%: a window grid shifted
    by one cell, or scaled differently from the patches, fails both."""
    backbone = build_backbone("effnet-lite0")
    extractor = configured_extractor(backbone, CPU, 64, "auto", "auto")
    size = 128
    dense = backbone.dense_trunk().window_rule(size)
    window = dense.window
    same, found, total = [], 0, 0
    for image in demo_images:
        height, width = image.shape[:2]
        scales, boxes = patch_grid(width, height, (1.0, 1.6, 2.4, 3.2), 2 / 3)
        maps = dense_image(extractor, image, sorted(set(scales.tolist())), size)
        windows = image_windows(dense, maps, CPU)
        described = torch.from_numpy(extractor(torch.from_numpy(cut_patches(image, boxes, size))))
        for scale, box, patch in zip(scales, boxes, described.float(), strict=True):
            n = maps.scales.index(float(scale))
            x, y = (int(np.rint(v * maps.factors[n])) for v in box[:2])
            if x % dense.stride or y % dense.stride:
                continue  # a grid patch between two windows
            cols = maps.maps[n].shape[2] - window[1] + 1
            i, j = y // dense.stride, x // dense.stride
            similarity = F.cosine_similarity(
                windows.descriptors[windows.scale_index == n], patch[None], dim=1
            )
            same.append(float(similarity[i * cols + j]))
            found += int(similarity.argmax()) == i * cols + j
            total += 1
    assert total >= 20
    assert np.mean(same) > 0.7
    assert found / total > 0.6


def test_a_net_without_dense_mode_says_why(monkeypatch):
    import torchvision

    serve_torchvision_weights(monkeypatch, torchvision.models.vgg11())
    backbone = build_backbone("torchvision:vgg11")
    with pytest.raises(PipelineError, match=r"^torchvision:vgg11:classifier.5: no dense mode"):
        backbone.dense_trunk()
    serve_torchvision_weights(monkeypatch, torchvision.models.resnet18())
    resnet = build_backbone("torchvision:resnet18").dense_trunk()
    assert (resnet.stride, resnet.window(224), resnet.averages) == (32, (7, 7), True)


@pytest.mark.parametrize("name", ["tiny", "effnet-lite0"])
def test_the_stored_window_rule_gives_the_windows_of_the_backbone_it_was_written_for(
    name, tmp_path
):
    # the stages that read dense maps (fit-weak, fit-cam, evaluate, compare) use the stored
    # rule instead of building the backbone: it must give the very same descriptors
    backbone = build_backbone(name, net_options(name))
    size = PATCH_SIZES[name]
    image = np.random.default_rng(1).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    extractor = configured_extractor(backbone, CPU, 4, "auto", "auto")
    maps = dense_image(extractor, image, [1.0, 1.6], size)
    built = backbone.dense_trunk().window_rule(size)
    origin = {"weights_digest": backbone.weights_digest, "arithmetic": "torch 2, float32"}
    write_window_rule(tmp_path / "s.rule.pt", built, {"net": name, **origin})
    stored = read_window_rule(tmp_path / "s.rule.pt", net=name, origin=origin)
    assert (stored.window, stored.stride, stored.averages) == (
        built.window, built.stride, built.averages,
    )  # fmt: skip
    expected = image_windows(built, maps, CPU)
    got = image_windows(stored, maps, CPU)
    assert torch.equal(got.descriptors, expected.descriptors)
    assert np.array_equal(got.boxes, expected.boxes)
    first = (tmp_path / "s.rule.pt").read_bytes()
    write_window_rule(tmp_path / "s.rule.pt", built, {"net": name, **origin})
    assert (tmp_path / "s.rule.pt").read_bytes() == first  # the same rule, the same bytes


def test_windows_of_maps_made_in_bfloat16_are_computed_in_bfloat16_as_patch_mode_does(
    tmp_path, caplog
):
    # maps made in bfloat16 (`features.precision`; emulated on a CPU without it) have their
    # windows computed in bfloat16 too, by the rule the stages read back: the window that is
    # a whole patch is patch mode's descriptor to the float16 a cache stores, not the float32
    # rule's
    backbone = build_backbone("tiny", net_options("tiny"))
    size = PATCH_SIZES["tiny"]
    image = np.random.default_rng(4).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    extractor = configured_extractor(backbone, CPU, 4, "torch", "bfloat16")
    maps = dense_image(extractor, image, [1.0, 1.6], size)
    origin = {"weights_digest": backbone.weights_digest, "arithmetic": "torch 2, bfloat16"}
    built = backbone.dense_trunk().window_rule(size)
    write_window_rule(tmp_path / "s.rule.pt", built, {"net": "tiny", **origin})
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        stored = read_window_rule(tmp_path / "s.rule.pt", net="tiny", origin=origin)
    if not native_bfloat16_here():
        assert "made in bfloat16" in caplog.text and "emulates" in caplog.text
    windows = image_windows(stored, maps, CPU)
    whole = windows.descriptors[windows.scale_index == 0]
    patch = extractor(torch.from_numpy(cut_patches(image, np.array([[0.0, 0.0, 96.0]]), size)))
    assert whole.shape == (1, backbone.dim)
    assert np.array_equal(as_float16(whole), patch)
    in_float32 = image_windows(built, maps, CPU).descriptors
    assert not np.array_equal(as_float16(in_float32[:1]), patch)
    # windows computed each from its own block (fit-windows) agree to bfloat16's rounding
    index = np.array([len(windows.descriptors) - 1, 0, 3])
    chosen = chosen_windows(stored, maps, index, CPU)
    largest = windows.descriptors.abs().max()
    assert (chosen - windows.descriptors[index]).abs().max() <= 2**-7 * largest


def test_a_stored_rule_follows_the_maps_to_the_device_they_are_on(tmp_path):
    # fit-windows, fit-weak and fit-cam compute windows on head.device (a GPU where there is
    # one) with the rule read onto the CPU; an AlexNet-type rule's weights must go there too.
    # No GPU here: the meta device stands for it (shapes without values)
    backbone = build_backbone("tiny", net_options("tiny"))
    origin = {"weights_digest": backbone.weights_digest, "arithmetic": "torch 2, float32"}
    built = backbone.dense_trunk().window_rule(32)
    write_window_rule(tmp_path / "s.rule.pt", built, {"net": "tiny", **origin})
    rule = read_window_rule(tmp_path / "s.rule.pt", net="tiny", origin=origin)
    for height, width in ((8, 8), (11, 13)):  # a whole patch's map (pool, then FC), and more
        maps = torch.rand(1, 32, height, width, device="meta")
        out = rule.descriptors(maps)
        assert out.device == maps.device and out.dtype == torch.float32
        assert out.shape == (1, backbone.dim, height - 7, width - 7)


def test_a_window_rule_of_other_weights_or_a_damaged_one_is_one_line_naming_dense(tmp_path):
    backbone = build_backbone("tiny", net_options("tiny"))
    rule = backbone.dense_trunk().window_rule(32)
    path = tmp_path / "trainval.rule.pt"
    origin = {"weights_digest": backbone.weights_digest, "arithmetic": "openvino 1, float32"}
    write_window_rule(path, rule, {"net": "tiny", **origin})
    with pytest.raises(
        PipelineError, match=r"rule\.pt: window rule of weights digest .*pipeline d"
    ):
        read_window_rule(path, net="tiny", origin=origin | {"weights_digest": "other"})
    # maps computed another way (runtime, precision) are not read with this rule either
    other_way = origin | {"arithmetic": "torch 2, bfloat16"}
    with pytest.raises(PipelineError, match=r"rule of arithmetic openvino 1, float32, not torch"):
        read_window_rule(path, net="tiny", origin=other_way)
    odd = origin | {"arithmetic": "torch 2, float8"}  # recorded alike, but no arithmetic
    write_window_rule(path, rule, {"net": "tiny", **odd})
    with pytest.raises(PipelineError, match=r"rule\.pt: window rule of unknown arithmetic \(not"):
        read_window_rule(path, net="tiny", origin=odd)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(PipelineError, match=r"rule\.pt: not a readable window rule"):
        read_window_rule(path, net="tiny", origin=origin)
    with pytest.raises(PipelineError, match=r"missing\.rule\.pt: no window rule; re-run"):
        read_window_rule(tmp_path / "missing.rule.pt", net="tiny", origin=origin)


def test_a_whole_map_window_is_pooled_then_passed_through_the_layers_without_a_cached_kernel():
    # a whole image's window (CAM, fit-cam) has the map's own size: a kernel composed and kept
    # for every size grew AlexNet-type runs by 300 MB per new image size
    torch.manual_seed(0)
    rule = PooledFullyConnected(6, [torch.nn.Linear(8 * 36, 32), torch.nn.Linear(32, 16)])
    for height, width in ((10, 6), (6, 9), (7, 7)):
        maps = torch.rand(1, 8, height, width)
        one = rule(maps, (height, width))
        composed = F.relu(F.conv2d(maps, rule.first_kernel((height, width)), rule.layers[0].bias))
        composed = F.relu(
            F.conv2d(composed, rule.layers[1].weight[:, :, None, None], rule.layers[1].bias)
        )
        assert one.shape == (1, 16, 1, 1)
        torch.testing.assert_close(one, composed, rtol=1e-5, atol=1e-6)
        rule._kernels.clear()  # what the test composed by hand
    rule(torch.rand(1, 8, 10, 6), (10, 6))
    assert rule._kernels == {}


def test_a_dense_shard_takes_the_bytes_of_its_cells_and_no_padding(tmp_path):
    """4,100 cells of 64 channels: a layout in chunks of 4,096 cells stored a second chunk of
    4,096 for the last 4 (twice the cells' bytes); a shard of 8 VOC images, 7-9% padding."""
    rng = np.random.default_rng(0)
    images = [
        ImageMaps(f"i{k}", 500, 375, [1.0], [1.0], [rng.standard_normal((64, 41, 50), np.float32)])
        for k in range(2)
    ]
    path = tmp_path / "shard-00000.h5"
    write_dense_shard(path, images, "digest", {})
    cells_bytes = 2 * 41 * 50 * 64 * 2
    assert path.stat().st_size - cells_bytes < 32 * 1024
    with h5py.File(path) as f:
        stored = f["cells"][:]
    assert np.array_equal(stored[: 41 * 50], images[0].maps[0].reshape(64, -1).T.astype(np.float16))
