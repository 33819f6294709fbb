"""From rehearsal measurements to VOC-sized projections: each stage's time as a fixed cost plus
a cost per image (per image and epoch for trained layers), its bytes per image, and its peak
memory, extrapolated to the image counts of VOC2007 and VOC2012 on this machine's CPU and, as an
estimate, on one GPU. Used by `scale.py`; the numbers it writes go to docs/benchmarks.md.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# Images of each VOC role: the object task's training and evaluation splits (VOC2007 trainval
# and test, VOC2012 train and val) and the Action task's (VOC2012 train and val; VOC2007 has
# none).
VOC_IMAGES = {
    "VOC2007": {"trainval": 5011, "test": 4952, "action-trainval": 0, "action-test": 0},
    "VOC2012": {"trainval": 5717, "test": 5823, "action-trainval": 2296, "action-test": 2292},
}
# Stages whose per-image time is the backbone's forward pass (the rest do not run it).
NET_BOUND = ("features", "dense", "action-features")
# Published inference rate of one current GPU, patches/s at 224 px: timm's benchmark of
# tf_efficientnet_lite0 on an RTX 4090 (AMP, batch 1024, PyTorch 2.4). AlexNet-type nets are
# faster than that (timm: resnet18, 2.6 times alexnet's multiply-adds, 13,537/s), so for them
# the bound is the loader.
GPU_FORWARD = {"effnet-lite0": 8709.74}
# What 8 DataLoader workers decode, at the 1,000-1,250 JPEG patches/s per worker measured on
# this machine (docs/benchmarks.md, patch codecs): the rate a GPU stage cannot exceed.
LOADER_BOUND = 8 * 1200.0
# The trained layers on a GPU, an estimate from their arithmetic (they train in float32): an
# RTX 4090's published float32 rate (82.6 TFLOP/s, NVIDIA's Ada whitepaper), and the reading of
# their inputs from a published NVMe rate (3.5 GB/s sequential, a PCIe 3 drive); each
# image-epoch costs the larger of the two.
GPU_FLOAT32_FLOPS = 82.6e12
DISK_BYTES_PER_S = 3.5e9
# The arithmetic of the trained layers (docs/method.md): FCa of 2048 (`head.hidden`) and FCb,
# over the descriptors of each net (float16 on disk); the windows of one 500x375 image at
# 224 px (9 scales, docs/benchmarks.md); the multiply-adds per window of an AlexNet-type net's
# FC6 + FC7 (9216 x 6144 + 6144 x 6144), which fit-weak, fit-cam and compare compute from the
# maps once per image; the actions of VOC2012.
HIDDEN, CLASSES, ACTIONS = 2048, 20, 10
DESCRIPTOR = {"effnet-lite0": 1280, "pre1512": 6144, "alexnet": 4096}
WINDOWS_PER_IMAGE = 2343
FC67_MACS = {"pre1512": 9216 * 6144 + 6144 * 6144, "alexnet": 9216 * 4096 + 4096 * 4096}
# GFLOP of one 224-px patch's forward (FlopCounterMode, benchmarks/runtimes.py): the scratch
# action variant trains the whole net on person patches.
FORWARD_GFLOP = {"effnet-lite0": 0.768, "pre1512": 2.342}


@dataclass(frozen=True)
class Measured:
    """One stage instance at one size: seconds, peak memory (MiB), bytes written, and the work it
    did: images of its split times epochs (1 for a stage that trains nothing); for trained
    layers, the seconds of training they record themselves (`work_seconds`, without the
    process's start), the part of it their epochs took (`epoch_seconds`; the rest prepared
    their inputs once per image) and the rows they trained on (`examples`: patches, windows,
    images or persons)."""

    stage: str
    seconds: float
    peak_mib: float
    bytes_written: int
    images: int
    epochs: int
    work_seconds: float | None = None
    epoch_seconds: float | None = None
    examples: int | None = None


def role(stage: str) -> str:
    """The image set a stage's work grows with: ``trainval`` (the training split), ``test``
    (the evaluation split), their ``action-`` counterparts, or ``fixed`` (a set number of
    images, or none)."""
    if stage == "demo" or stage.startswith("action-maps"):
        return "fixed"
    evaluation = re.search(r"test|evaluate|heatmaps|compare", stage) is not None
    split = "test" if evaluation else "trainval"
    action = stage.startswith(("action-", "fit-action"))
    return f"action-{split}" if action else split


@dataclass(frozen=True)
class Line:
    """A stage's cost as ``fixed + once * images + (epoch_fixed + per_unit * images) * epochs``
    seconds (`once`: what a trained layer prepares per image before its epochs; `epoch_fixed`:
    what each of its epochs costs whatever the images), its bytes as ``fixed_bytes +
    bytes_per_image * images`` (a trained layer's file does not grow), its peak MiB (at the
    larger size) with what it grows by per image, and, for trained layers, the rows they train
    on per image of their role."""

    stage: str
    fixed: float
    per_unit: float
    fixed_bytes: float
    bytes_per_image: float
    peak_mib: float
    peak_per_image_mib: float
    once: float = 0.0
    rows_per_image: float = 0.0
    epoch_fixed: float = 0.0


def fit_line(small: Measured, large: Measured, memory_slope: float = 0.0) -> Line:
    """The line through two sizes of one stage. `memory_slope` is the MiB of peak memory per image
    of the role that the fast-net rehearsal saw grow from N to 4N (0 when it did not)."""
    work_small, work_large = small.images * small.epochs, large.images * large.epochs
    per_unit = once = epoch_fixed = 0.0
    if large.work_seconds is not None and work_large:
        # a few epochs on a few images: training is a second next to the process's start, so
        # the slope of the stage's seconds between two sizes is noise; the time the stage
        # measured itself, over its work: its epochs per image and epoch, what it prepared
        # before them per image (records without the epochs' part count all of it per epoch,
        # an upper bound), as slopes between the two sizes where both recorded it
        epochs_part = large.work_seconds if large.epoch_seconds is None else large.epoch_seconds
        per_unit = epochs_part / work_large
        once = (large.work_seconds - epochs_part) / large.images
        slopes = recorded_slopes(small, large)
        if slopes is not None:
            once, per_unit, epoch_fixed = slopes
    elif work_large > work_small:
        per_unit = max((large.seconds - small.seconds) / (work_large - work_small), 0.0)
    fixed = max(
        large.seconds - per_unit * work_large - epoch_fixed * large.epochs - once * large.images,
        0.0,
    )
    grown = large.images - small.images
    per_image = max((large.bytes_written - small.bytes_written) / grown, 0.0) if grown else 0.0
    fixed_bytes = max(large.bytes_written - per_image * large.images, 0.0)
    rows = large.examples / large.images if large.examples and large.images else 0.0
    return Line(
        large.stage, fixed, per_unit, fixed_bytes, per_image, large.peak_mib,
        max(memory_slope, 0.0), once, rows, epoch_fixed,
    )  # fmt: skip


def recorded_slopes(small: Measured, large: Measured) -> tuple[float, float, float] | None:
    """A trained stage's seconds per image prepared once, per image and epoch, and per epoch
    whatever the images, from the records of its work at two sizes (same epochs): what grows
    with the images apart from what the stage and each epoch cost whatever their number
    (loading the window rule, the first epoch's warm-up), which one size alone spreads over
    its few images. None without two such records."""
    sizes = [(m.work_seconds, m.epoch_seconds, m.images) for m in (small, large)]
    if any(w is None or e is None for w, e, _ in sizes) or small.epochs != large.epochs:
        return None
    (work_a, epochs_a, images_a), (work_b, epochs_b, images_b) = sizes
    if images_b <= images_a:
        return None
    grown = images_b - images_a
    once = max(((work_b - epochs_b) - (work_a - epochs_a)) / grown, 0.0)  # type: ignore[operator]
    per_unit = max((epochs_b - epochs_a) / grown, 0.0) / large.epochs  # type: ignore[operator]
    epoch_fixed = max(epochs_b / large.epochs - per_unit * images_b, 0.0)  # type: ignore[operator]
    return once, per_unit, epoch_fixed


@dataclass(frozen=True)
class Projected:
    """A stage at one dataset's size: CPU hours, estimated GPU hours, peak GiB, disk GB."""

    cpu_hours: float
    gpu_hours: float
    ram_gib: float
    disk_gb: float


def adaptation_macs(dim: int, outputs: int) -> int:
    """Multiply-adds per row of FCa (`HIDDEN`) and FCb (`outputs`) over a `dim`-d descriptor."""
    return dim * HIDDEN + HIDDEN * outputs


def trained_work(line: Line, net: str) -> tuple[float, float, float]:
    """A trained stage's arithmetic on one image of its role: FLOP prepared once, FLOP and
    bytes read per epoch. A training row costs 6 FLOP per multiply-add (forward and backward)
    and the epoch's measuring pass 2 more; fit-weak runs the layers over every window of the
    image without gradient and trains each class's best window; the descriptors are read as
    float16."""
    stage, rows, dim = line.stage.split("@")[0], line.rows_per_image, DESCRIPTOR.get(net, 4096)
    windows_once = 2 * FC67_MACS.get(net, 0)  # per window: FC6 + FC7 from the maps, once
    if stage in ("fit-head", "fit-windows"):
        return 0.0, 8 * adaptation_macs(dim, CLASSES + 1) * rows, 2 * dim * rows
    if stage == "fit-weak":
        macs = adaptation_macs(dim, CLASSES)
        per_epoch = 2 * macs * WINDOWS_PER_IMAGE + 6 * macs * CLASSES
        return windows_once * WINDOWS_PER_IMAGE, per_epoch, 2 * dim * WINDOWS_PER_IMAGE
    if stage == "fit-cam":
        return windows_once, 8 * dim * CLASSES, 4 * dim
    if stage == "fit-action-frozen":
        return 0.0, 8 * adaptation_macs(dim, ACTIONS) * rows, 2 * dim * rows
    if stage == "fit-action-update":  # FC6 (and FC7) trained again from pool5's inputs
        macs = FC67_MACS.get(net, 0) + adaptation_macs(dim, ACTIONS)
        return 0.0, 8 * macs * rows, 2 * 9216 * rows
    if stage == "fit-action-scratch":  # the whole net from the person patches' pixels
        return 0.0, 4 * FORWARD_GFLOP.get(net, 1.0) * 1e9 * rows, 3 * 224 * 224 * rows
    raise ValueError(f"{stage}: not a trained stage")


def trained_gpu_seconds(line: Line, net: str, images: int, epochs: int) -> float:
    """The estimated seconds of a trained stage on one GPU: its FLOP at `GPU_FLOAT32_FLOPS`,
    each epoch no faster than reading its inputs at `DISK_BYTES_PER_S`."""
    once, per_epoch, read = trained_work(line, net)
    epoch = max(per_epoch / GPU_FLOAT32_FLOPS, read / DISK_BYTES_PER_S)
    return (once / GPU_FLOAT32_FLOPS + epoch * epochs) * images


def project(
    line: Line, images: int, epochs: int, cpu_rate: float, gpu_rate: float, net: str = ""
) -> Projected:
    """Extrapolate `line` to `images` of its role and `epochs` (trained stages). `cpu_rate` and
    `gpu_rate` are the net's forward patches/s on this CPU and on the GPU estimated: a
    net-bound stage's per-image time is divided by their ratio; a trained stage of `net` (one
    with rows per image) costs its arithmetic at a published rate (`trained_gpu_seconds`);
    other stages keep their CPU time."""
    per_unit = line.per_unit
    fixed = line.fixed + line.epoch_fixed * epochs
    seconds = fixed + line.once * images + per_unit * images * epochs
    gpu_per_unit = per_unit * cpu_rate / gpu_rate if line.stage.startswith(NET_BOUND) else per_unit
    gpu_seconds = fixed + line.once * images + gpu_per_unit * images * epochs
    if line.rows_per_image:
        gpu_seconds = fixed + trained_gpu_seconds(line, net, images, epochs)
    return Projected(
        seconds / 3600,
        gpu_seconds / 3600,
        (line.peak_mib + line.peak_per_image_mib * images) / 1024,
        (line.fixed_bytes + line.bytes_per_image * images) / 1e9,
    )


def gpu_rate(net: str) -> float:
    """The estimated patches/s of one GPU for `net`: the published forward rate, bounded by
    what 8 loader workers decode."""
    return min(GPU_FORWARD.get(net, LOADER_BOUND), LOADER_BOUND)


def projection_table(
    lines: Sequence[Line], net: str, cpu_rate: float, max_epochs: int, trained: Sequence[str]
) -> str:
    """The markdown table of every stage of `lines` projected to VOC2007 and VOC2012: trained
    stages (`trained`) at `max_epochs` (the schedule's bound), the others once."""
    rows = [
        "| stage | s / image | bytes / image | peak MiB | VOC2007 CPU h | GPU h (est.) | GB "
        "| VOC2012 CPU h | GPU h (est.) | GB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    totals = {name: [0.0, 0.0, 0.0, 0.0] for name in VOC_IMAGES}
    for line in lines:
        if line.stage == "demo":
            continue
        epochs = max_epochs if line.stage.startswith(tuple(trained)) else 1
        cells = []
        for name, counts in VOC_IMAGES.items():
            images = counts.get(role(line.stage), 0)
            if role(line.stage).startswith("action") and images == 0:
                cells += ["-", "-", "-"]
                continue
            p = project(line, images, epochs, cpu_rate, gpu_rate(net), net)
            cells += [f"{p.cpu_hours:.2f}", f"{p.gpu_hours:.2f}", f"{p.disk_gb:.1f}"]
            total = totals[name]
            total[0] += p.cpu_hours
            total[1] += p.gpu_hours
            total[2] = max(total[2], p.ram_gib)
            total[3] += p.disk_gb
        unit = f"{line.per_unit:.3f}" + (" / epoch" if epochs > 1 else "")
        if line.once:
            unit = f"{line.once:.3f} + {unit}"
        rows.append(
            f"| {line.stage} | {unit} | {line.bytes_per_image:,.0f} | {line.peak_mib:.0f} | "
            + " | ".join(cells)
            + " |"
        )
    summary = []
    for name, (cpu, gpu, ram, disk) in totals.items():
        summary.append(
            f"{name}: {cpu:.1f} CPU h, {gpu:.1f} GPU h (est.), {ram:.1f} GiB, {disk:.0f} GB"
        )
    return "\n".join(rows) + "\n\n" + "; ".join(summary)
