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


@dataclass(frozen=True)
class Measured:
    """One stage instance at one size: seconds, peak RSS (MiB), bytes written, and the work it
    did: images of its split times epochs (1 for a stage that trains nothing); for trained
    layers, the seconds of training they record themselves (`work_seconds`, without the
    process's start)."""

    stage: str
    seconds: float
    peak_rss_mib: float
    bytes_written: int
    images: int
    epochs: int
    work_seconds: float | None = None


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
    """A stage's cost as ``fixed + per_unit * images * epochs`` seconds, its bytes as
    ``fixed_bytes + bytes_per_image * images`` (a trained layer's file does not grow), and its
    peak MiB (at the larger size) with what it grows by per image."""

    stage: str
    fixed: float
    per_unit: float
    fixed_bytes: float
    bytes_per_image: float
    rss_mib: float
    rss_per_image_mib: float


def fit_line(small: Measured, large: Measured, rss_slope: float = 0.0) -> Line:
    """The line through two sizes of one stage. `rss_slope` is the MiB of peak RSS per image
    of the role that the fast-net rehearsal saw grow from N to 4N (0 when it did not)."""
    work_small, work_large = small.images * small.epochs, large.images * large.epochs
    per_unit = 0.0
    if large.work_seconds is not None and work_large:
        # a few epochs on a few images: training is a second next to the process's start, so
        # the slope between two sizes is noise; the time the stage measured itself, over its
        # work, is an upper bound (it includes reading its inputs)
        per_unit = large.work_seconds / work_large
    elif work_large > work_small:
        per_unit = max((large.seconds - small.seconds) / (work_large - work_small), 0.0)
    fixed = max(large.seconds - per_unit * work_large, 0.0)
    grown = large.images - small.images
    per_image = max((large.bytes_written - small.bytes_written) / grown, 0.0) if grown else 0.0
    fixed_bytes = max(large.bytes_written - per_image * large.images, 0.0)
    return Line(
        large.stage, fixed, per_unit, fixed_bytes, per_image, large.peak_rss_mib,
        max(rss_slope, 0.0),
    )  # fmt: skip


@dataclass(frozen=True)
class Projected:
    """A stage at one dataset's size: CPU hours, estimated GPU hours, peak GiB, disk GB."""

    cpu_hours: float
    gpu_hours: float
    ram_gib: float
    disk_gb: float


def project(line: Line, images: int, epochs: int, cpu_rate: float, gpu_rate: float) -> Projected:
    """Extrapolate `line` to `images` of its role and `epochs` (trained stages). `cpu_rate` and
    `gpu_rate` are the net's forward patches/s on this CPU and on the GPU estimated: a
    net-bound stage's per-image time is divided by their ratio; other stages keep their CPU
    time (an upper bound: trained layers also run faster on a GPU)."""
    per_unit = line.per_unit
    seconds = line.fixed + per_unit * images * epochs
    gpu_per_unit = per_unit * cpu_rate / gpu_rate if line.stage.startswith(NET_BOUND) else per_unit
    gpu_seconds = line.fixed + gpu_per_unit * images * epochs
    return Projected(
        seconds / 3600,
        gpu_seconds / 3600,
        (line.rss_mib + line.rss_per_image_mib * images) / 1024,
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
            p = project(line, images, epochs, cpu_rate, gpu_rate(net))
            cells += [f"{p.cpu_hours:.2f}", f"{p.gpu_hours:.2f}", f"{p.disk_gb:.1f}"]
            total = totals[name]
            total[0] += p.cpu_hours
            total[1] += p.gpu_hours
            total[2] = max(total[2], p.ram_gib)
            total[3] += p.disk_gb
        unit = f"{line.per_unit:.3f}" + (" / epoch" if epochs > 1 else "")
        rows.append(
            f"| {line.stage} | {unit} | {line.bytes_per_image:,.0f} | {line.rss_mib:.0f} | "
            + " | ".join(cells)
            + " |"
        )
    summary = []
    for name, (cpu, gpu, ram, disk) in totals.items():
        summary.append(
            f"{name}: {cpu:.1f} CPU h, {gpu:.1f} GPU h (est.), {ram:.1f} GiB, {disk:.0f} GB"
        )
    return "\n".join(rows) + "\n\n" + "; ".join(summary)
