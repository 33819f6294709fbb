"""Every --net passes the same contract (timm-style, parametrized over the registry)."""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from pipeline.core.errors import PipelineError
from pipeline.core.hashing import file_sha256
from pipeline.features.nets import registry as nets
from pipeline.features.nets.registry import (
    PRE1512_CONV,
    REGISTRY,
    AlexNetFC7,
    build_backbone,
    effnet_lite0_classifier,
    normalise,
)
from tests.conftest import Payload


@pytest.fixture(scope="module")
def pre1512_weights(tmp_path_factory) -> Path:
    """A random state dict of the paper's geometry, saved like a user's checkpoint."""
    path = tmp_path_factory.mktemp("weights") / "pre1512.pt"
    torch.manual_seed(0)
    torch.save(AlexNetFC7(PRE1512_CONV, fc=6144, classes=1512).state_dict(), path)
    return path


def offline(monkeypatch) -> None:
    """Make every torch hub download fail as it does on a machine without network."""

    def refuse(*args, **kwargs):
        raise URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def registry_options(name: str, pre1512_weights: Path, monkeypatch) -> dict:
    """What building registry net `name` needs here, offline: its params options, and for
    alexnet, whose weights torchvision downloads, random weights of the same shapes."""
    if name == "alexnet":
        import torchvision

        serve_torchvision_weights(monkeypatch, torchvision.models.alexnet())
    return {"weights": str(pre1512_weights)} if name == "pre1512" else {}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registered_net_gives_finite_deterministic_descriptors_of_its_size(
    name, pre1512_weights, monkeypatch
):
    backbone = build_backbone(name, registry_options(name, pre1512_weights, monkeypatch))
    assert backbone.dim == REGISTRY[name].dim
    assert not backbone.module.training
    assert not any(p.requires_grad for p in backbone.module.parameters())
    pixels = torch.randint(0, 256, (3, 96, 96, 3), dtype=torch.uint8)
    with torch.inference_mode():
        a = backbone.module(normalise(pixels, backbone.mean, backbone.std))
        b = backbone.module(normalise(pixels, backbone.mean, backbone.std))
    assert a.shape == (3, backbone.dim)
    assert torch.isfinite(a).all() and torch.equal(a, b)
    assert len(backbone.weights_digest) >= 32


def test_registry_has_the_designs_nets_with_their_descriptor_sizes():
    assert {n: s.dim for n, s in REGISTRY.items()} == {
        "pre1512": 6144,
        "alexnet": 4096,
        "effnet-lite0": 1280,
        "tiny": 64,
    }


def test_pre1512_loads_a_saved_state_dict_exactly(pre1512_weights):
    backbone = build_backbone("pre1512", {"weights": str(pre1512_weights)})
    saved = torch.load(pre1512_weights, weights_only=True)
    # the trunk is `features`; the window rule holds FC6 (`classifier.1`) and FC7 (`.4`)
    names = {
        "trunk.": "features.",
        "rule.layers.0.": "classifier.1.",
        "rule.layers.1.": "classifier.4.",
    }
    loaded = backbone.module.state_dict()
    assert len(loaded) == len(saved) - 2  # all but FC8, which is never run
    for key, value in loaded.items():
        prefix = next(p for p in names if key.startswith(p))
        assert torch.equal(value, saved[names[prefix] + key.removeprefix(prefix)]), key


def test_pre1512_without_weights_says_which_file_and_keys_to_provide(tmp_path):
    with pytest.raises(PipelineError) as err:
        build_backbone("pre1512", {"weights": None})
    assert "nets.pre1512.weights" in str(err.value)
    assert "classifier.4.weight (6144, 6144)" in str(err.value)
    with pytest.raises(PipelineError, match="nope.pt: pre1512 weights file is missing"):
        build_backbone("pre1512", {"weights": str(tmp_path / "nope.pt")})


def test_wrong_shaped_state_dict_names_the_first_mismatching_key(tmp_path):
    state = AlexNetFC7(PRE1512_CONV, fc=4096, classes=1000).state_dict()
    torch.save(state, tmp_path / "alexnet-sized.pt")
    with pytest.raises(PipelineError, match=r"key 'classifier.1.weight' has shape \(4096, 9216\)"):
        build_backbone("pre1512", {"weights": str(tmp_path / "alexnet-sized.pt")})
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(PipelineError, match="junk.pt: not a readable torch state dict"):
        build_backbone("pre1512", {"weights": str(tmp_path / "junk.pt")})


def test_unknown_net_lists_the_known_ones():
    with pytest.raises(PipelineError) as err:
        build_backbone("vgg-verydeep")
    assert "unknown net 'vgg-verydeep'" in str(err.value)
    assert "pre1512, alexnet, effnet-lite0, tiny, torchvision:<model>[:<node>]" in str(err.value)


def test_alexnet_offline_is_a_clear_line_on_how_to_get_the_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    offline(monkeypatch)
    with pytest.raises(PipelineError) as err:
        build_backbone("alexnet")
    message = str(err.value)
    assert "alexnet: ImageNet weights are not in the torch cache" in message
    assert "alexnet-owt-7be5be79.pth" in message and "\n" not in message


def serve_torchvision_weights(monkeypatch, model: torch.nn.Module) -> None:
    """Make torchvision weights resolve to `model`'s state dict instead of the checked cache
    file (which would need a download)."""
    monkeypatch.setattr(nets, "torchvision_state", lambda name, weights: model.state_dict())


def test_a_crafted_file_in_the_torch_cache_is_refused_and_never_unpickled(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    offline(monkeypatch)
    cached = tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    cached.parent.mkdir(parents=True)
    marker = tmp_path / "ran.txt"
    torch.save({"features.0.weight": Payload(marker)}, cached)
    with pytest.raises(PipelineError) as err:
        build_backbone("alexnet")
    assert str(err.value).startswith(f"{cached}: SHA-256 is ")
    assert "not the 7be5be79... recorded for torchvision's alexnet weights" in str(err.value)
    assert not marker.exists()
    # even a file whose name carries its true hash prefix is only ever loaded weights-only
    renamed = cached.with_name(f"crafted-{file_sha256(cached)[:8]}.pth")
    cached.rename(renamed)
    with pytest.raises(PipelineError, match="not a readable torch state dict"):
        nets.load_state_dict_file(renamed, "crafted")
    assert not marker.exists()


def test_alexnet_descriptor_is_post_relu_fc7_of_torchvision_alexnet(monkeypatch):
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.alexnet().eval()
    serve_torchvision_weights(monkeypatch, reference)
    backbone = build_backbone("alexnet")
    x = torch.randn(2, 3, 224, 224)
    fc7 = {}
    reference.classifier[5].register_forward_hook(lambda m, i, o: fc7.setdefault("out", o))
    with torch.inference_mode():
        reference(x)
        ours = backbone.module(x)
    assert backbone.dim == 4096
    # FC6 runs as a 6x6 convolution (one code path with dense mode): equal up to float32 sums
    torch.testing.assert_close(ours, fc7["out"])
    assert (ours >= 0).all()


def test_torchvision_models_take_the_node_before_the_classifier(monkeypatch):
    import torchvision

    torch.manual_seed(0)
    serve_torchvision_weights(monkeypatch, torchvision.models.resnet18())
    backbone = build_backbone("torchvision:resnet18")
    assert (backbone.layer, backbone.dim) == ("flatten", 512)
    assert backbone.mean == pytest.approx((0.485, 0.456, 0.406))
    assert build_backbone("torchvision:resnet18:layer4").dim == 512 * 7 * 7
    with pytest.raises(PipelineError, match="no node 'nope'"):
        build_backbone("torchvision:resnet18:nope")
    with pytest.raises(PipelineError, match="no such torchvision classification model"):
        build_backbone("torchvision:notamodel")


def imagenet_top5(model: torch.nn.Module, image: np.ndarray) -> list[int]:
    pixels = torch.from_numpy(np.array(Image.fromarray(image).resize((224, 224))))[None]
    with torch.inference_mode():
        logits = model(normalise(pixels, (0.5,) * 3, (0.5,) * 3))
    return logits.topk(5).indices[0].tolist()


def test_pre1512_weights_of_another_sha256_are_refused_before_loading(pre1512_weights):
    options = {"weights": str(pre1512_weights), "sha256": "0123456789abcdef"}
    with pytest.raises(PipelineError) as err:
        build_backbone("pre1512", options)
    assert str(err.value).startswith(f"{pre1512_weights}: SHA-256 is ")
    assert "params nets.pre1512.sha256" in str(err.value)
    right = file_sha256(pre1512_weights)
    assert build_backbone("pre1512", {**options, "sha256": right[:12]}).dim == 6144


def test_effnet_lite0_really_carries_imagenet_weights():
    model = effnet_lite0_classifier()
    cat_classes = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert cat_classes & set(imagenet_top5(model, data.chelsea()))
    cup_classes = {504, 967, 968}  # coffee mug, espresso, cup
    assert cup_classes & set(imagenet_top5(model, data.coffee()))
