"""Every --net passes the same contract (timm-style, parametrized over the registry): built
pretrained and untrained, a descriptor of its declared size, a dense rule, its cut below FC6
or the refusal, and weights of another digest refused. A family of nets is one file."""

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
from pipeline.features.below_fc6 import split_below_fc6
from pipeline.features.nets import alexnet, efficientnet_lite, torchvision_any, weights
from pipeline.features.nets.alexnet import PRE1512_CONV, AlexNetFC7
from pipeline.features.nets.backbone import normalise
from pipeline.features.nets.efficientnet_lite import effnet_lite0_classifier
from pipeline.features.nets.registry import (
    build_backbone,
    build_untrained,
    dense_mode_refusal,
    discover,
    registered,
)
from pipeline.features.trunks import DenseTrunk
from tests.conftest import Payload, net_options


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
    given = {"weights": str(pre1512_weights)} if name == "pre1512" else {}
    return {**net_options(name), **given}


@pytest.mark.parametrize("name", list(registered()))
def test_registered_net_gives_finite_deterministic_descriptors_of_its_size(
    name, pre1512_weights, monkeypatch
):
    backbone = build_backbone(name, registry_options(name, pre1512_weights, monkeypatch))
    assert backbone.dim == registered()[name].dim
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
    assert {n: s.dim for n, s in registered().items()} == {
        "pre1512": 6144,
        "alexnet": 4096,
        "effnet-lite0": 1280,
        "tiny": 64,
    }


def test_pre1512_loads_a_saved_state_dict_exactly(pre1512_weights):
    backbone = build_backbone("pre1512", {"weights": str(pre1512_weights), "sha256": None})
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
        build_backbone("pre1512", {"weights": None, "sha256": None})
    assert "nets.pre1512.weights" in str(err.value)
    assert "classifier.4.weight (6144, 6144)" in str(err.value)
    with pytest.raises(PipelineError, match="nope.pt: pre1512 weights file is missing"):
        build_backbone("pre1512", {"weights": str(tmp_path / "nope.pt"), "sha256": None})


def test_wrong_shaped_state_dict_names_the_first_mismatching_key(tmp_path):
    state = AlexNetFC7(PRE1512_CONV, fc=4096, classes=1000).state_dict()
    torch.save(state, tmp_path / "alexnet-sized.pt")
    with pytest.raises(PipelineError, match=r"key 'classifier.1.weight' has shape \(4096, 9216\)"):
        build_backbone("pre1512", {"weights": str(tmp_path / "alexnet-sized.pt"), "sha256": None})
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(PipelineError, match="junk.pt: not a readable torch state dict"):
        build_backbone("pre1512", {"weights": str(tmp_path / "junk.pt"), "sha256": None})


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
    for family in (alexnet, torchvision_any):
        monkeypatch.setattr(family, "torchvision_state", lambda name, found: model.state_dict())


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
        weights.load_state_dict_file(renamed, "crafted")
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


def offer_weights_of_another_digest(name: str, pre1512_weights: Path, tmp_path, monkeypatch):
    """Options (and, where the weights come from elsewhere, a patched source) under which
    registry net `name` is offered weights other than the ones it records."""
    if name == "pre1512":
        return {"weights": str(pre1512_weights), "sha256": "0123456789abcdef"}
    if name == "alexnet":  # a file in the torch cache under the name of the real one
        monkeypatch.setenv("TORCH_HOME", str(tmp_path))
        offline(monkeypatch)
        cached = tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
        cached.parent.mkdir(parents=True)
        torch.save(AlexNetFC7((64, 192, 384, 256, 256), 4096, 1000).state_dict(), cached)
        return {}
    if name == "effnet-lite0":  # the packaged file swapped for another
        other = tmp_path / "efficientnet-lite0.pth"
        torch.save({"_fc.weight": torch.zeros(1000, 1280)}, other)
        monkeypatch.setattr(efficientnet_lite, "effnet_lite0_weights_path", lambda: other)
        return {}
    raise AssertionError(f"{name}: give the contract a case of weights of another digest")


@pytest.mark.parametrize("name", [n for n in registered() if n != "tiny"])
def test_every_registered_net_refuses_weights_of_another_digest_in_one_line(
    name, pre1512_weights, tmp_path, monkeypatch
):
    options = offer_weights_of_another_digest(name, pre1512_weights, tmp_path, monkeypatch)
    with pytest.raises(PipelineError) as err:
        build_backbone(name, options)
    assert ": SHA-256 is " in str(err.value) and "\n" not in str(err.value)


def test_the_random_test_net_records_the_digest_of_the_weights_its_seed_draws():
    # tiny has no weights file: its digest is that of its tensors, so another seed is seen
    assert build_backbone("tiny", {"seed": 0}).weights_digest == (
        build_backbone("tiny", {"seed": 0}).weights_digest
    )
    assert build_backbone("tiny", {"seed": 1}).weights_digest != (
        build_backbone("tiny", {"seed": 0}).weights_digest
    )


@pytest.mark.parametrize("name", list(registered()))
def test_every_registered_net_builds_untrained_runs_densely_and_cuts_below_fc6(
    name, pre1512_weights, monkeypatch
):
    spec = registered()[name]
    options = registry_options(name, pre1512_weights, monkeypatch)
    backbone = build_backbone(name, options)
    size = 96
    x = normalise(torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8), spec.mean, spec.std)
    with torch.no_grad():
        descriptors = backbone.module(x)
    # untrained: the same architecture from other, random weights, trainable
    untrained, mean, std = build_untrained(name, options, seed=0)
    assert (mean, std) == (backbone.mean, backbone.std)
    assert untrained.state_dict().keys() == backbone.module.state_dict().keys()
    assert all(p.requires_grad for p in untrained.parameters())
    with torch.no_grad():
        assert untrained.eval()(x).shape == (2, spec.dim)
    # dense mode: the window rule over the maps of a patch-sized image is the descriptor
    assert dense_mode_refusal(name) == ""
    dense = backbone.dense_trunk()
    assert isinstance(dense, DenseTrunk) and dense.stride == spec.stride
    with torch.no_grad():
        windows = dense.rule(dense.trunk(x), dense.window(size))
    torch.testing.assert_close(windows.flatten(1), descriptors, atol=1e-4, rtol=1e-4)
    # below FC6: the cached part and the part above rebuild the descriptor, FC6 trains
    below = split_below_fc6(backbone)
    with torch.no_grad():
        rebuilt = below.upper.eval()(below.lower(x))
    torch.testing.assert_close(rebuilt, descriptors, atol=1e-4, rtol=1e-4)
    assert all(p.requires_grad for p in below.first.parameters())


def test_a_net_options_block_with_an_unknown_key_or_a_bad_value_is_one_line(pre1512_weights):
    with pytest.raises(PipelineError, match=r"^params nets\.effnet-lite0\.seed: Extra inputs"):
        build_backbone("effnet-lite0", {"seed": 0})
    with pytest.raises(PipelineError, match=r"^params nets\.pre1512\.sha256: String should match"):
        build_backbone("pre1512", {"weights": str(pre1512_weights), "sha256": "xyz"})
    with pytest.raises(PipelineError, match=r"^params nets\.tiny\.seed: Input should be"):
        build_untrained("tiny", {"seed": -1}, seed=0)
    # every option is given by params.yaml: none has a default of its own in code
    with pytest.raises(PipelineError, match=r"^params nets\.tiny\.seed: Field required"):
        build_backbone("tiny", {})


def test_every_option_of_every_net_is_documented():
    text = (Path(__file__).resolve().parents[1] / "docs" / "backbones.md").read_text()
    keys = [f"nets.{n}.{o}" for n, s in registered().items() for o in s.options.model_fields]
    assert keys and [k for k in keys if f"`{k}`" not in text] == []


FAMILY = """
from pipeline.features.below_fc6 import split_fully_connected
from pipeline.features.nets.backbone import IMAGENET_MEAN, IMAGENET_STD, NetSpec
from pipeline.features.nets.tiny import TinyOptions, build_tiny, tiny_net

NETS = (
    NetSpec(
        "mine", "fc", 64, "mine", IMAGENET_MEAN, IMAGENET_STD, 4, build_tiny, tiny_net,
        options=TinyOptions, below_fc6=split_fully_connected,
    ),
)
"""


def test_a_family_of_nets_is_one_file_found_by_the_registry(tmp_path, monkeypatch):
    package = tmp_path / "more_nets"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mine.py").write_text(FAMILY)
    (package / "helpers.py").write_text("X = 1\n")  # a module without NETS registers nothing
    monkeypatch.syspath_prepend(str(tmp_path))
    found = discover("more_nets")
    assert list(found) == ["mine"]
    monkeypatch.setattr(
        "pipeline.features.nets.registry.registered", lambda: {**found, "tiny": None}
    )
    backbone = build_backbone("mine", {"seed": 3})
    assert (backbone.dim, backbone.name) == (64, "mine")
    assert backbone.dense_trunk().stride == 4 and split_below_fc6(backbone) is not None
    (package / "again.py").write_text(FAMILY)
    with pytest.raises(PipelineError, match="net 'mine' is registered twice"):
        discover("more_nets")
