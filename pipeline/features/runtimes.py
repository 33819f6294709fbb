"""How a frozen backbone's numbers are computed: the runtime that runs it (PyTorch, the
reference and the fallback, or OpenVINO, the CPU's inference runtime) and the precision
(float32, or bfloat16 where the hardware computes it and the net's descriptors allow it).

`Arithmetic` is the resolved choice; it joins the identity of every cache computed with it
(`pipeline.features.cache_identity`), so that descriptors computed one way are never mixed with
another's. `compiled_forward` turns a module into a function of float32 batches run that way.
"""

from __future__ import annotations

import copy
import ctypes
import importlib.metadata
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pipeline.core.errors import PipelineError
from pipeline.core.libc import libc_function
from pipeline.features.trunks import apply_rule

log = logging.getLogger("pipeline")

RUNTIMES = ("auto", "torch", "openvino")
PRECISIONS = ("auto", "float32", "bfloat16")
Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Arithmetic:
    """A resolved runtime (``torch`` or ``openvino``), its installed version, and the precision
    (``float32`` or ``bfloat16``) the backbone's weights and activations are computed in."""

    runtime: str
    version: str
    precision: str

    def describe(self) -> str:
        """The arithmetic in words, as cache identities and `verify` show it:
        ``"openvino 2026.4.1, float32"``."""
        return f"{self.runtime} {self.version}, {self.precision}"

    @classmethod
    def described(cls, words: str) -> Arithmetic:
        """The arithmetic `describe` put in `words` (a cache's recorded identity); ValueError
        when they are not such a description."""
        runtime_version, _, precision = words.rpartition(", ")
        runtime, _, version = runtime_version.partition(" ")
        if runtime not in RUNTIMES[1:] or not version or precision not in PRECISIONS[1:]:
            raise ValueError(f"not an arithmetic: {words!r}")
        return cls(runtime, version, precision)

    @property
    def dtype(self) -> torch.dtype:
        """The torch dtype of the precision."""
        return torch.bfloat16 if self.precision == "bfloat16" else torch.float32


def openvino_version() -> str | None:
    """The installed OpenVINO's version, None when it is not installed."""
    try:
        return importlib.metadata.version("openvino")
    except importlib.metadata.PackageNotFoundError:
        return None


def native_bfloat16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 products natively: a CUDA GPU with bf16 support, or
    a CPU with AVX-512-BF16 or AMX (elsewhere bfloat16 is emulated, slower than float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def native_bfloat16_here() -> bool:
    """Whether this machine computes bfloat16 natively on its CPU or on a CUDA GPU it has."""
    cuda = torch.cuda.is_available() and native_bfloat16(torch.device("cuda"))
    return cuda or native_bfloat16(torch.device("cpu"))


def made_on(device: torch.device) -> str:
    """Where descriptors were computed, in words (recorded beside a cache, not part of its
    identity): the device and the CPU's vector capability or the GPU's name."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.backends.cpu.get_cpu_capability()})"


def resolve_arithmetic(
    runtime: str, precision: str, device: torch.device, bfloat16_safe: bool, convertible: bool
) -> Arithmetic:
    """The arithmetic of a backbone from the ``features.runtime`` and ``features.precision``
    settings on `device`. ``auto`` runtime: OpenVINO on the CPU for a net it converts
    (`convertible`: a registry net), PyTorch elsewhere. ``auto`` precision: bfloat16 where the
    device computes it natively and the net is `bfloat16_safe`, else float32. PipelineError
    naming the setting for an unknown value, OpenVINO not installed or asked for on CUDA."""
    if runtime not in RUNTIMES:
        raise PipelineError(f"features.runtime: {runtime!r} is not one of {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise PipelineError(
            f"features.precision: {precision!r} is not one of {', '.join(PRECISIONS)}"
        )
    version = openvino_version()
    if runtime == "openvino":
        if version is None:
            raise PipelineError(
                "features.runtime: openvino is not installed (pip install openvino), or set "
                "features.runtime: torch"
            )
        if device.type != "cpu":
            raise PipelineError(
                f"features.runtime: openvino runs the backbone on the CPU, not on {device}; "
                "set features.runtime: auto or torch"
            )
    if runtime == "auto":
        use_openvino = device.type == "cpu" and convertible and version is not None
        runtime = "openvino" if use_openvino else "torch"
    if precision == "auto":
        precision = "bfloat16" if bfloat16_safe and native_bfloat16(device) else "float32"
    elif precision == "bfloat16" and not native_bfloat16(device):
        log.warning(
            "features.precision: bfloat16 on %s, which does not compute it natively: slower "
            "than float32",
            made_on(device),
        )
    if runtime == "openvino":
        return Arithmetic("openvino", str(version), precision)
    return Arithmetic("torch", torch.__version__, precision)


def cast_once(module: nn.Module, arithmetic: Arithmetic) -> nn.Module:
    """`module` in the arithmetic's precision: itself for float32, else a copy with its weights
    cast to bfloat16 once (not by autocast at every call, which converts them each time)."""
    if arithmetic.precision == "bfloat16":
        return copy.deepcopy(module).to(torch.bfloat16)
    return module


def torch_forward(module: nn.Module, arithmetic: Arithmetic, device: torch.device) -> Forward:
    """`module` run by PyTorch on `device` in the arithmetic's precision (`cast_once`)."""
    module = cast_once(module, arithmetic).to(device, memory_format=torch.channels_last)
    dtype = arithmetic.dtype

    def forward(x: torch.Tensor) -> torch.Tensor:
        return module(x.to(dtype)).float()

    return forward


class _SignalStack(ctypes.Structure):
    """C's ``stack_t``: an alternate signal stack (`sigaltstack(2)`)."""

    _fields_ = (
        ("ss_sp", ctypes.c_void_p),
        ("ss_flags", ctypes.c_int),
        ("ss_size", ctypes.c_size_t),
    )


SIGALTSTACK = libc_function("sigaltstack")


def current_signal_stack() -> _SignalStack | None:
    """The calling thread's alternate signal stack (`sigaltstack(2)`); None where the C library
    has no `sigaltstack` or the call fails."""
    stack = _SignalStack()
    if SIGALTSTACK is None or SIGALTSTACK(None, ctypes.byref(stack)) != 0:
        return None
    return stack


@contextmanager
def signal_stack_kept() -> Iterator[None]:
    """Give the calling thread back the alternate signal stack it had before the block.
    OpenVINO's CPU plugin installs a stack of its own when it compiles a model and, when that
    model is dropped, frees it and puts back the stack it found, but only if its own is still
    the current one: two models dropped in the order they were made leave the thread on the
    first one's freed stack, and the next signal with a handler (a child's SIGCHLD under
    torch's DataLoader) kills the process with a SIGSEGV that faulthandler cannot report.
    Nothing is done where `current_signal_stack` cannot tell the stack."""
    before = current_signal_stack()
    try:
        yield
    finally:
        if before is not None:
            SIGALTSTACK(ctypes.byref(before), None)


def openvino_forward(
    module: nn.Module, arithmetic: Arithmetic, example: torch.Tensor, dynamic_size: bool
) -> Forward:
    """`module` converted to OpenVINO once and compiled for the CPU in the arithmetic's
    precision (OpenVINO's own default there may be bfloat16, so it is always set), with a
    dynamic batch and, when `dynamic_size`, dynamic height and width (whole images of any
    size, without a recompilation per size). `example` is one input ``[1, 3, H, W]``.
    PipelineError naming ``features.runtime`` when the module does not convert, or when
    OpenVINO computes in another precision than asked."""
    import openvino as ov

    height, width = (-1, -1) if dynamic_size else tuple(example.shape[-2:])
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # torch.jit.trace's deprecation, OpenVINO's use
            model = ov.convert_model(module, example_input=example, input=[(-1, 3, height, width)])
    except Exception as err:  # OpenVINO raises its own types, one per failing front-end step
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PipelineError(
            f"features.runtime: openvino cannot convert {type(module).__name__} ({first}); "
            "set features.runtime: torch"
        ) from None
    hint = "bf16" if arithmetic.precision == "bfloat16" else "f32"
    config = {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": torch.get_num_threads()}
    with signal_stack_kept():  # see there: the plugin's stack must not outlive the model
        compiled = ov.Core().compile_model(model, "CPU", config)
    used = compiled.get_property("INFERENCE_PRECISION_HINT")
    if (used == ov.Type.bf16) != (arithmetic.precision == "bfloat16"):
        raise PipelineError(
            f"features.precision: {arithmetic.precision} asked for, but OpenVINO computes in "
            f"{used} on this CPU ({made_on(torch.device('cpu'))}); set features.precision: auto"
        )

    def forward(x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(compiled(array)[0])

    return forward


def compiled_forward(
    module: nn.Module,
    arithmetic: Arithmetic,
    device: torch.device,
    example: torch.Tensor,
    dynamic_size: bool = False,
) -> Forward:
    """A function of normalised float32 batches ``[N, 3, H, W]`` that returns `module`'s
    float32 outputs computed with `arithmetic` on `device` (see `torch_forward`,
    `openvino_forward`); `example` is one input ``[1, 3, H, W]`` of the sizes it will be given
    (any sizes when `dynamic_size`)."""
    if arithmetic.runtime == "openvino":
        return openvino_forward(module, arithmetic, example, dynamic_size)
    return torch_forward(module, arithmetic, device)


def rule_forward(
    rule: nn.Module, arithmetic: Arithmetic, device: torch.device
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A window rule (`pipeline.features.trunks`) applied to the whole map of each patch, in
    PyTorch on `device` in the arithmetic's precision (`cast_once`; a rule without weights,
    the window average, stays float32): float32 maps ``[N, C, h, w]`` -> float32
    ``[N, d, 1, 1]``."""
    rule = cast_once(rule, arithmetic).to(device)

    def forward(maps: torch.Tensor) -> torch.Tensor:
        return apply_rule(rule, maps, tuple(maps.shape[-2:]))

    return forward


FLOAT16_LIMIT = float(np.finfo(np.float16).max)  # 65504


def as_float16(values: torch.Tensor | np.ndarray) -> np.ndarray:
    """Float32 (or bfloat16) descriptors or maps as the float16 a cache stores: every value
    in float16's range as the nearest float16 (bfloat16 values there exactly: float16 has the
    more mantissa bits), values beyond ±65504 saturated to ±65504 instead of becoming
    infinite; NaN stays NaN (and a cache holding one is refused when read)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy()
    return np.clip(values, -FLOAT16_LIMIT, FLOAT16_LIMIT).astype(np.float16)
