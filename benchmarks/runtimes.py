"""The frozen backbone's runtimes and precisions side by side, and where each stands against
this machine's matrix-multiply peak (a roofline table).

In one run, variants timed alternately (rounds of one pass each, after a warm-up), reports
for each net's patch forward (`--size` px, `--batch` patches):
  - PyTorch eager float32 (the reference), OpenVINO float32 (`features.runtime: openvino`),
    ONNX Runtime float32 (the other candidate, not used by the pipeline), and PyTorch with
    its weights cast once to bfloat16 (only where the CPU computes bfloat16 natively:
    emulated, it takes minutes per batch);
  - the speed-up over the reference (min / median of the rounds), the relative error of the
    descriptors against it (max |x - ref| / max |ref|), GFLOP per patch (counted by torch's
    FlopCounterMode on the reference), the GFLOP/s achieved and its share of the peak of a
    2048x2048 matrix multiply in the same precision, measured here first;
and dense mode's trunk on whole images (one image's 9 scales at the patch size, sizes as a
500x375 image gives) with PyTorch against OpenVINO's one dynamic-shape compilation, in
seconds per image. Run on demand (needs `pip install -e '.[bench]'` for ONNX Runtime):

    python benchmarks/runtimes.py [--nets effnet-lite0 pre1512] [--size 224] [--batch 64]
        [--rounds 3]

pre1512 runs with seeded random weights (its ImageNet weights are not public); effnet-lite0
with its own. Times are ratios within the run: the machine is shared.
"""

from __future__ import annotations

import argparse
import copy
import io
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.data.cutting import resized_size
from pipeline.features.dense_extractor import aligned
from pipeline.features.nets.registry import build_backbone, build_untrained
from pipeline.features.runtimes import (
    Arithmetic,
    compiled_forward,
    native_bfloat16,
    openvino_version,
)
from pipeline.features.trunks import WindowedTrunk, fold_batch_norms

CPU = torch.device("cpu")
SCALES = (1.0, 1.3, 1.6, 2.0, 2.4, 2.8, 3.2, 3.6, 4.0)


def peak_gflops(dtype: torch.dtype, side: int = 2048, passes: int = 5) -> float:
    """GFLOP/s of the best of `passes` square matrix multiplies in `dtype` on this CPU."""
    a = torch.randn(side, side).to(dtype)
    b = torch.randn(side, side).to(dtype)
    a @ b
    best = min(timed(lambda: a @ b) for _ in range(passes))
    return 2 * side**3 / best / 1e9


def timed(run: Callable[[], object]) -> float:
    """Seconds of one call of `run`."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def net_module(name: str) -> WindowedTrunk:
    """The registered net: effnet-lite0 with its weights, others with seeded random ones."""
    if name == "effnet-lite0":
        return build_backbone(name).module
    options = {"weights": None, "sha256": None} if name == "pre1512" else {}
    module, _, _ = build_untrained(name, options, seed=0)
    return module.eval().requires_grad_(False)


def onnx_forward(module: torch.nn.Module, example: torch.Tensor) -> Callable:
    """`module` exported to ONNX and run by ONNX Runtime on this CPU's threads."""
    import onnxruntime

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (example,), buffer, dynamo=False, input_names=["x"],
            dynamic_axes={"x": {0: "n"}},
        )  # fmt: skip
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(buffer.getvalue(), options)
    return lambda x: torch.from_numpy(session.run(None, {"x": x.numpy()})[0])


def with_rule(trunk: Callable, rule: torch.nn.Module, dtype: torch.dtype) -> Callable:
    """Descriptors ``[N, d]`` float32: `trunk`'s maps through the window rule in `dtype`."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        maps = trunk(x).to(dtype)
        return rule(maps, tuple(maps.shape[-2:])).flatten(1).float()

    return forward


def patch_variants(module: WindowedTrunk, example: torch.Tensor) -> dict[str, Callable]:
    """The patch forward (trunk, then window rule) of each variant."""
    version = str(openvino_version())
    variants = {}
    chosen = [
        ("torch float32", Arithmetic("torch", torch.__version__, "float32")),
        ("openvino float32", Arithmetic("openvino", version, "float32")),
    ]
    if native_bfloat16(CPU):  # emulated elsewhere: minutes per batch, not worth timing
        bfloat16 = Arithmetic("torch", torch.__version__, "bfloat16")
        chosen.append(("torch bfloat16 (weights cast)", bfloat16))
    for label, arithmetic in chosen:
        trunk = compiled_forward(module.trunk, arithmetic, CPU, example)
        rule = copy.deepcopy(module.rule).to(arithmetic.dtype)
        variants[label] = with_rule(trunk, rule, arithmetic.dtype)
    try:
        variants["onnxruntime float32"] = with_rule(
            onnx_forward(module.trunk, example), module.rule, torch.float32
        )
    except ImportError:
        print("(onnxruntime not installed: pip install -e '.[bench]')")
    return variants


def patch_table(name: str, size: int, batch: int, rounds: int, peaks: dict) -> None:
    """Print the runtimes' table of one net's patch forward."""
    module = net_module(name)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    variants = patch_variants(module, x[:1])
    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:
            module(x[:1])
        gflop = counter.get_total_flops() / 1e9
        reference = variants["torch float32"](x)
        errors = {
            k: float((f(x) - reference).abs().max() / reference.abs().max())
            for k, f in variants.items()
        }
        seconds: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(rounds):
            for label, forward in variants.items():
                seconds[label].append(timed(lambda f=forward: f(x)))
    base = seconds["torch float32"]
    print(f"\n{name}, {size} px patches, batch {batch}: {gflop:.3f} GFLOP per patch", flush=True)
    print("| variant | s / batch (median) | speed-up min / median | rel. error | GFLOP/s | peak |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, times in seconds.items():
        ratios = [b / t for b, t in zip(base, times, strict=True)]
        rate = gflop * batch / statistics.median(times)
        peak = peaks["bfloat16" if "bfloat16" in label else "float32"]
        print(
            f"| {label} | {statistics.median(times):.3f} | {min(ratios):.2f} / "
            f"{statistics.median(ratios):.2f} | {errors[label]:.1e} | {rate:.1f} | "
            f"{100 * rate / peak:.0f}% |"
        )


def dense_table(name: str, size: int, rounds: int) -> None:
    """Print seconds per 500x375 image of dense mode's trunk, PyTorch against OpenVINO."""
    module = net_module(name)
    stride = 32
    trunk, _ = fold_batch_norms(module.trunk)
    example = torch.zeros(1, 3, size, size)
    torch32 = Arithmetic("torch", torch.__version__, "float32")
    openvino = Arithmetic("openvino", str(openvino_version()), "float32")
    variants = {
        "torch float32": compiled_forward(trunk, torch32, CPU, example),
        "openvino float32 (one dynamic compilation)": compiled_forward(
            trunk, openvino, CPU, example, dynamic_size=True
        ),
    }
    inputs = []
    for scale in SCALES:
        height, width = resized_size(500, 375, min(500, 375) / scale, size)
        inputs.append(
            torch.randn(1, 3, aligned(height, size, stride), aligned(width, size, stride))
        )
    seconds: dict[str, list[float]] = {k: [] for k in variants}
    with torch.inference_mode():
        for forward in variants.values():
            forward(inputs[0])
        for _ in range(rounds):
            for label, forward in variants.items():
                seconds[label].append(timed(lambda f=forward: [f(i) for i in inputs]))
    base = seconds["torch float32"]
    print(f"\n{name} dense trunk, one 500x375 image at 9 scales ({size} px patches)")
    print("| variant | s / image (median) | speed-up min / median |")
    print("| --- | ---: | ---: |")
    for label, times in seconds.items():
        ratios = [b / t for b, t in zip(base, times, strict=True)]
        print(
            f"| {label} | {statistics.median(times):.3f} | {min(ratios):.2f} / "
            f"{statistics.median(ratios):.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", default=["effnet-lite0", "pre1512"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    peaks = {"float32": peak_gflops(torch.float32)}
    if native_bfloat16(CPU):
        peaks["bfloat16"] = peak_gflops(torch.bfloat16)
    print(
        f"CPU {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads, "
        f"bfloat16 {'native' if native_bfloat16(CPU) else 'emulated (not timed)'}; matmul "
        f"peak: {', '.join(f'{k} {v:.0f} GFLOP/s' for k, v in peaks.items())}",
        flush=True,
    )
    for name in args.nets:
        patch_table(name, args.size, args.batch, args.rounds, peaks)
    for name in args.nets:
        for size in sorted({128, args.size}):
            dense_table(name, size, args.rounds)


if __name__ == "__main__":
    main()
