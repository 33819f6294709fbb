"""A VOC2012-layout devkit of photos (not the demo's drawn shapes), for benchmarks.

Objects are cut from scikit-image's sample photos (the astronaut and the cameraman: person;
Chelsea: cat; the stereo motorcycle's two views: motorbike; the coffee cup: cup; the rocket:
rocket; the clock: clock), each instance varied (a random part of 75-100% of its region,
mirrored, turned up to 12 degrees, rescaled, its brightness, contrast and colour changed,
sometimes blurred) and blended with a feathered elliptical edge into a background cut from
the texture and scene photos (brick, grass, gravel, moon, Hubble deep field, tissue, retina,
page), tinted. Images are 500x375 or 375x500 with 1 to 3 objects, which may
overlap or leave the image (truncated); objects under 32 pixels are difficult. Layout:
``JPEGImages``, ``Annotations`` (VOC XML), ``ImageSets/Main/{train,val}.txt`` and
``<class>_{train,val}.txt``. Run alone to write one:

    python benchmarks/photo_devkit.py OUT/VOC2012 [--train 60] [--val 40] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter
from skimage import data as photos

from pipeline.data.synthetic_devkit import (
    DemoObject,
    annotation_xml,
    class_presence,
    write_main_sets,
)

# class -> (photo, region (x0, y0, x1, y1) of the object in it)
SOURCES = {
    "person": [("astronaut", (130, 0, 400, 512)), ("camera", (180, 30, 420, 512))],
    "cat": [("chelsea", (60, 0, 440, 300))],
    "motorbike": [
        ("stereo_motorcycle", (40, 60, 700, 470)),
        ("stereo_motorcycle/1", (40, 60, 700, 470)),
    ],
    "cup": [("coffee", (150, 30, 480, 330))],
    "rocket": [("rocket", (280, 0, 380, 427))],
    "clock": [("clock", (100, 30, 330, 270))],
}
CLASSES = list(SOURCES)
BACKGROUNDS = (
    "brick", "grass", "gravel", "moon", "hubble_deep_field", "immunohistochemistry", "retina",
    "page",
)  # fmt: skip
DIFFICULT_SIDE = 32  # pixels: smaller objects are difficult, as VOC marks its tiniest


def photo(name: str) -> Image.Image:
    """A scikit-image sample photo as RGB (``name/1``: the second image of a pair)."""
    base, _, index = name.partition("/")
    loaded = getattr(photos, base)()
    if isinstance(loaded, tuple):
        loaded = loaded[int(index or 0)]
    array = np.asarray(loaded)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=2)
    return Image.fromarray(array[..., :3].astype(np.uint8))


def background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A random part of a background photo, tinted, at `width` x `height`."""
    image = photo(BACKGROUNDS[rng.integers(len(BACKGROUNDS))])
    side = rng.uniform(0.4, 1.0) * min(image.size)
    x0, y0 = rng.uniform(0, image.width - side), rng.uniform(0, image.height - side)
    part = image.crop((int(x0), int(y0), int(x0 + side), int(y0 + side))).resize((width, height))
    tint = np.asarray(part, np.float32) * rng.uniform(0.6, 1.2, size=3)
    return Image.fromarray(np.clip(tint, 0, 255).astype(np.uint8))


def instance(rng: np.random.Generator, name: str) -> Image.Image:
    """One varied instance of class `name`, as RGBA with a feathered elliptical edge."""
    source, (x0, y0, x1, y1) = SOURCES[name][rng.integers(len(SOURCES[name]))]
    w, h = x1 - x0, y1 - y0
    keep_w, keep_h = rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0)
    left, top = x0 + rng.uniform(0, 1 - keep_w) * w, y0 + rng.uniform(0, 1 - keep_h) * h
    part = photo(source).crop((int(left), int(top), int(left + keep_w * w), int(top + keep_h * h)))
    if rng.random() < 0.5:
        part = part.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    part = ImageEnhance.Brightness(part).enhance(rng.uniform(0.7, 1.3))
    part = ImageEnhance.Contrast(part).enhance(rng.uniform(0.7, 1.3))
    part = ImageEnhance.Color(part).enhance(rng.uniform(0.5, 1.5))
    if rng.random() < 0.3:
        part = part.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
    yy, xx = np.mgrid[0 : part.height, 0 : part.width]
    radius = ((2 * xx / part.width - 1) ** 2 + (2 * yy / part.height - 1) ** 2) ** 0.5
    mask = Image.fromarray((np.clip((1.1 - radius) / 0.25, 0, 1) * 255).astype(np.uint8))
    part.putalpha(mask)
    return part.rotate(rng.uniform(-12, 12), resample=Image.Resampling.BILINEAR, expand=True)


def render(rng: np.random.Generator) -> tuple[Image.Image, list[DemoObject]]:
    """One image and its objects (0-based half-open boxes of the visible extent)."""
    width, height = (500, 375) if rng.random() < 0.7 else (375, 500)
    image = background(rng, width, height)
    objects = []
    for _ in range(rng.choice([1, 1, 2, 2, 3])):
        name = CLASSES[rng.integers(len(CLASSES))]
        part = instance(rng, name)
        side = rng.uniform(0.15, 0.8) * min(width, height)
        factor = side / max(part.size)
        size = (max(1, round(part.width * factor)), max(1, round(part.height * factor)))
        part = part.resize(size)
        left = int(rng.uniform(-0.2 * part.width, width - 0.8 * part.width))
        top = int(rng.uniform(-0.2 * part.height, height - 0.8 * part.height))
        image.paste(part, (left, top), part)
        alpha = np.asarray(part)[..., 3] > 127
        rows, cols = np.flatnonzero(alpha.any(1)), np.flatnonzero(alpha.any(0))
        x0, y0 = max(0, left + int(cols[0])), max(0, top + int(rows[0]))
        x1, y1 = min(width, left + int(cols[-1]) + 1), min(height, top + int(rows[-1]) + 1)
        if x1 - x0 < 4 or y1 - y0 < 4:
            continue
        truncated = (x0, y0, x1, y1) != (
            left + int(cols[0]), top + int(rows[0]), left + int(cols[-1]) + 1,
            top + int(rows[-1]) + 1,
        )  # fmt: skip
        difficult = min(x1 - x0, y1 - y0) < DIFFICULT_SIDE
        objects.append(DemoObject(name, x0, y0, x1, y1, difficult, truncated, "Unspecified"))
    return image, objects


def write_photo_devkit(year_dir: Path, *, n_train: int, n_val: int, seed: int) -> list[str]:
    """Write the devkit at `year_dir` (built beside it, then renamed into place; an existing
    directory is replaced). Returns the class list, in label order."""
    tmp = year_dir.with_name(f".{year_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (tmp / sub).mkdir(parents=True)
    ids = [f"2012_{i:06d}" for i in range(1, n_train + n_val + 1)]
    splits = {"train": ids[:n_train], "val": ids[n_train:]}
    truth: dict[str, dict[str, int]] = {c: {} for c in CLASSES}
    for number, image_id in enumerate(ids):
        image, objects = render(np.random.default_rng([seed, number]))
        image.save(tmp / "JPEGImages" / f"{image_id}.jpg", quality=90)
        xml = annotation_xml(year_dir.name, image_id, image.width, image.height, objects)
        (tmp / "Annotations" / f"{image_id}.xml").write_text(xml)
        for c in CLASSES:
            truth[c][image_id] = class_presence(objects, c)
    write_main_sets(tmp / "ImageSets" / "Main", splits, truth)
    if year_dir.exists():
        shutil.rmtree(year_dir)
    year_dir.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, year_dir)
    return CLASSES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the year directory to write, e.g. .../VOC2012")
    parser.add_argument("--train", type=int, default=60)
    parser.add_argument("--val", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_photo_devkit(args.out, n_train=args.train, n_val=args.val, seed=args.seed)


if __name__ == "__main__":
    main()
