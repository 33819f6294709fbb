"""The runtimes and precisions of the frozen backbone (`pipeline.features.runtimes`): OpenVINO
gives PyTorch's numbers to float rounding on every registered net, on patches and on whole
images of any size; bfloat16 stays within its stated bound where it is allowed; the settings
resolve as documented; and a cache computed one way is never read as another's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pipeline.core.errors import PipelineError
from pipeline.features import runtimes
from pipeline.features.nets.backbone import BFLOAT16_BOUND
from pipeline.features.nets.registry import build_untrained, registered
from pipeline.features.runtimes import Arithmetic, compiled_forward, resolve_arithmetic
from tests.cli import run_cli
from tests.conftest import net_options

CPU = torch.device("cpu")
OPENVINO = Arithmetic("openvino", str(runtimes.openvino_version()), "float32")
TORCH = Arithmetic("torch", torch.__version__, "float32")
ROUNDING = 1e-4  # OpenVINO against PyTorch: max |difference| / max |PyTorch's output|
PATCH = {"tiny": 32, "effnet-lite0": 128, "pre1512": 224, "alexnet": 224}
FEATURES = Path("data/features/test-voc/tiny")


def untrained(name: str) -> torch.nn.Module:
    """The registered net's architecture with seeded random weights (the weights of alexnet
    and pre1512 are not on this machine; the arithmetic does not depend on their values)."""
    module, _, _ = build_untrained(name, net_options(name), seed=0)
    return module.eval().requires_grad_(False)


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got - expected| / max |expected|."""
    return float((got - expected).abs().max() / expected.abs().max().clamp_min(1e-12))


@pytest.mark.parametrize("name", sorted(PATCH))
def test_openvino_gives_the_trunk_maps_of_pytorch_on_every_registered_net(name):
    assert set(PATCH) == set(registered())  # a new net is added here too
    trunk = untrained(name).trunk
    size = PATCH[name]
    generator = torch.Generator().manual_seed(1)
    patches = torch.randn(5, 3, size, size, generator=generator)
    example = patches[:1]
    converted = compiled_forward(trunk, OPENVINO, CPU, example)
    reference = compiled_forward(trunk, TORCH, CPU, example)
    with torch.inference_mode():
        assert relative_error(converted(patches), reference(patches)) < ROUNDING
        # whole images: one compilation serves every size, as dense mode feeds them
        images = compiled_forward(trunk, OPENVINO, CPU, example, dynamic_size=True)
        for height, width in [(size, size), (size + 37, size * 2 - 5), (size * 2 + 64, size)]:
            image = torch.randn(1, 3, height, width, generator=generator)
            got, expected = images(image), reference(image)
            assert got.shape == expected.shape
            assert relative_error(got, expected) < ROUNDING


def test_bfloat16_descriptors_of_a_net_marked_safe_stay_within_the_bound():
    # the AlexNet geometry in bfloat16 (weights cast once) against float32, as precision auto
    # would run it on a CPU with AMX or AVX-512-BF16, or a GPU (bfloat16 is emulated here)
    assert registered()["pre1512"].bfloat16_safe and not registered()["effnet-lite0"].bfloat16_safe
    net = untrained("pre1512")
    patches = torch.rand(4, 3, 224, 224, generator=torch.Generator().manual_seed(2)) * 4 - 2
    bf16 = Arithmetic("torch", torch.__version__, "bfloat16")
    with torch.inference_mode():
        trunk32 = compiled_forward(net.trunk, TORCH, CPU, patches[:1])
        trunk16 = compiled_forward(net.trunk, bf16, CPU, patches[:1])
        rule32 = runtimes.rule_forward(net.rule, TORCH, CPU)
        rule16 = runtimes.rule_forward(net.rule, bf16, CPU)
        expected = rule32(trunk32(patches)).flatten(1)
        got = rule16(trunk16(patches)).flatten(1)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    for one, reference in zip(got, expected, strict=True):
        assert relative_error(one, reference) < BFLOAT16_BOUND


def test_the_settings_resolve_as_documented(monkeypatch):
    # auto: OpenVINO for registry nets on the CPU, float32 where bfloat16 is not native
    monkeypatch.setattr(runtimes, "native_bfloat16", lambda device: False)
    assert resolve_arithmetic("auto", "auto", CPU, True, True) == OPENVINO
    assert resolve_arithmetic("auto", "auto", CPU, True, False).runtime == "torch"
    assert resolve_arithmetic("torch", "float32", CPU, False, True) == TORCH
    # where the hardware computes bfloat16, auto takes it for the nets marked safe only
    monkeypatch.setattr(runtimes, "native_bfloat16", lambda device: True)
    assert resolve_arithmetic("auto", "auto", CPU, True, True).precision == "bfloat16"
    assert resolve_arithmetic("auto", "auto", CPU, False, True).precision == "float32"
    with pytest.raises(PipelineError, match=r"^features.runtime: 'onnx' is not one of auto, "):
        resolve_arithmetic("onnx", "auto", CPU, False, True)
    with pytest.raises(PipelineError, match=r"^features.precision: 'fp8' is not one of auto, "):
        resolve_arithmetic("auto", "fp8", CPU, False, True)
    with pytest.raises(PipelineError, match=r"^features.runtime: openvino runs the backbone on"):
        resolve_arithmetic("openvino", "auto", torch.device("cuda"), False, True)
    # OpenVINO missing: auto falls back to PyTorch, asking for it is one line
    monkeypatch.setattr(runtimes, "openvino_version", lambda: None)
    assert resolve_arithmetic("auto", "float32", CPU, False, True) == TORCH
    with pytest.raises(PipelineError, match=r"^features.runtime: openvino is not installed"):
        resolve_arithmetic("openvino", "float32", CPU, False, True)


def test_a_recorded_arithmetic_reads_back_as_the_arithmetic_that_wrote_it():
    # the window rule computes in the precision its maps' recorded arithmetic names
    for arithmetic in (OPENVINO, TORCH, Arithmetic("torch", "2.14.1+cu128", "bfloat16")):
        assert Arithmetic.described(arithmetic.describe()) == arithmetic
    for words in ("", "torch, float32", "onnx 1, float32", "torch 2, float16", "torch 2 float32"):
        with pytest.raises(ValueError, match="not an arithmetic"):
            Arithmetic.described(words)


def test_a_value_beyond_float16_is_stored_saturated_not_infinite():
    values = np.array([1e6, -7e4, 1.5, np.nan], np.float32)
    stored = runtimes.as_float16(values)
    assert stored.dtype == np.float16
    assert stored[:3].tolist() == [65504.0, -65504.0, 1.5] and np.isnan(stored[3])
    exact = torch.tensor([0.1, 3.0, 1000.5]).bfloat16()
    assert np.array_equal(runtimes.as_float16(exact), exact.float().numpy().astype(np.float16))


def attribute(shard: Path, key: str) -> str:
    with h5py.File(shard, "r") as f:
        return str(f.attrs[key])


def test_a_cache_made_with_one_runtime_is_recomputed_not_read_as_another(trained, edit_params):
    shard = FEATURES / "test" / "shard-00000.h5"
    assert attribute(shard, "arithmetic") == OPENVINO.describe()  # the default here
    assert attribute(shard, "made_on").startswith("cpu (")
    edit_params({"features.runtime": "torch"})
    # verify names every cache computed another way than the params give now
    done = run_cli("verify", check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert (
        f"{FEATURES / 'test'}: computed with {OPENVINO.describe()}, the params give "
        f"{TORCH.describe()} on cpu (" in done.stderr
    )
    assert "re-run `pipeline features --net tiny`" in done.stderr
    # and shows where each was computed, which alone does not make it stale
    assert f"{FEATURES / 'trainval'}: {OPENVINO.describe()}, made on cpu (" in done.stderr
    # the stage recomputes the cache rather than resuming from shards made the other way
    run_cli("features", "--net", "tiny", "--split", "test")
    assert attribute(shard, "arithmetic") == TORCH.describe()
    # and the head, trained on OpenVINO's descriptors, does not score PyTorch's
    done = run_cli("evaluate", "--net", "tiny", check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: data/heads/test-voc/tiny/head.pt: trained on tiny descriptors of arithmetic "
        f"{OPENVINO.describe()}, not {TORCH.describe()} as these; re-run "
        "`pipeline fit-head --net tiny`"
    )


# two OpenVINO models dropped in the order they were made, then a signal with a handler: the
# process must survive it and keep the alternate signal stack it had (own process: a failure
# kills it, not the test's)
DROPPED_IN_ORDER = """
import gc, signal, subprocess, sys
import torch
from torch import nn
from pipeline.features import runtimes

def current():
    stack = runtimes.current_signal_stack()
    return stack.ss_sp, stack.ss_flags, stack.ss_size

import faulthandler; faulthandler.enable()  # as pytest and `python -X faulthandler` do
before = current()
arithmetic = runtimes.Arithmetic("openvino", runtimes.openvino_version(), "float32")
net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
first, second = (runtimes.openvino_forward(net, arithmetic, torch.zeros(1, 3, 16, 16), False)
                 for _ in range(2))
del first; gc.collect()
del second; gc.collect()
signal.signal(signal.SIGCHLD, lambda *_: None)  # as torch's DataLoader does
subprocess.run([sys.executable, "-c", "pass"], check=True)
print(current() == before)
"""


def test_openvino_models_dropped_in_any_order_leave_the_signal_stack_a_child_can_signal():
    done = subprocess.run(
        [sys.executable, "-c", DROPPED_IN_ORDER], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"ended with {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.strip() == "True"
