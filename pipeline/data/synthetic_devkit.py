"""A small synthetic dataset in exact VOCdevkit layout, for demos and tests.

Each class is drawn as its own shape filled with its own texture and colours (a pretrained CNN
tells them apart easily), 1-6 objects per image from small to most of the image, some
overlapping, some cut by the border (``truncated``), some small ones ``difficult``, on cluttered
textured backgrounds, at VOC-like image sizes. Everything is a function of the seed.
"""

from __future__ import annotations

import colorsys
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from pipeline.core.errors import PipelineError

IMAGE_SIZES: tuple[tuple[int, int], ...] = (
    (500, 375),
    (375, 500),
    (500, 333),
    (333, 500),
    (500, 400),
    (500, 281),
    (400, 500),
    (480, 360),
)
SHAPES = ("ellipse", "triangle", "rectangle", "diamond", "star", "ring", "cross", "hexagon")
PATTERNS = ("hstripes", "checker", "dots", "vstripes", "gradient", "grid")
POSES = ("Unspecified", "Left", "Right", "Frontal", "Rear")
MARKER = ".voc-transfer-demo"  # written into every generated year directory


@dataclass(frozen=True)
class DemoObject:
    """An object drawn in a demo image: class, 0-based half-open integer box, flags."""

    name: str
    x0: int
    y0: int
    x1: int
    y1: int
    difficult: bool
    truncated: bool
    pose: str
    actions: tuple[str, ...] | None = None  # a person of the Action task: the actions it does


def class_style(index: int) -> tuple[str, str, float]:
    """Return the (shape, pattern, hue in [0, 1)) that identifies class number `index`."""
    return (
        SHAPES[index % len(SHAPES)],
        PATTERNS[(index + 2 * (index // len(SHAPES))) % len(PATTERNS)],
        (index * 0.381966) % 1.0,
    )


def _shape_mask(shape: str, w: int, h: int) -> Image.Image:
    mask = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(mask)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    if shape == "ellipse":
        d.ellipse((0, 0, w - 1, h - 1), fill=255)
    elif shape == "triangle":
        d.polygon([(cx, 0), (w - 1, h - 1), (0, h - 1)], fill=255)
    elif shape == "rectangle":
        d.rectangle((0, 0, w - 1, h - 1), fill=255)
    elif shape == "diamond":
        d.polygon([(cx, 0), (w - 1, cy), (cx, h - 1), (0, cy)], fill=255)
    elif shape == "star":
        angles = np.arange(10) * np.pi / 5 - np.pi / 2
        radius = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        d.polygon(
            list(
                zip(
                    cx + cx * radius * np.cos(angles),
                    cy + cy * radius * np.sin(angles),
                    strict=True,
                )
            ),
            fill=255,
        )
    elif shape == "ring":
        d.ellipse((0, 0, w - 1, h - 1), fill=255)
        d.ellipse((w * 0.3, h * 0.3, w * 0.7, h * 0.7), fill=0)
    elif shape == "cross":
        d.rectangle((w * 0.33, 0, w * 0.67, h - 1), fill=255)
        d.rectangle((0, h * 0.33, w - 1, h * 0.67), fill=255)
    elif shape == "hexagon":
        angles = np.arange(6) * np.pi / 3
        d.polygon(
            list(zip(cx + cx * np.cos(angles), cy + cy * np.sin(angles), strict=True)), fill=255
        )
    else:
        raise ValueError(shape)
    return mask


def _texture(pattern: str, w: int, h: int, hue: float, rng: np.random.Generator) -> np.ndarray:
    hue = (hue + rng.uniform(-0.03, 0.03)) % 1.0
    c1 = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.7, 1.0), rng.uniform(0.75, 1.0))) * 255
    c2 = np.array(colorsys.hsv_to_rgb((hue + 0.5) % 1.0, 0.3, rng.uniform(0.1, 0.35))) * 255
    period = max(4, int(min(w, h) / rng.uniform(4, 7)))
    yy, xx = np.mgrid[0:h, 0:w]
    if pattern == "hstripes":
        t = (yy // (period // 2)) % 2
    elif pattern == "vstripes":
        t = (xx // (period // 2)) % 2
    elif pattern == "checker":
        t = ((xx // period) + (yy // period)) % 2
    elif pattern == "dots":
        t = (((xx % period) - period / 2) ** 2 + ((yy % period) - period / 2) ** 2) < (
            period / 3
        ) ** 2
    elif pattern == "gradient":
        t = (xx + yy) / max(1, w + h - 2)
    elif pattern == "grid":
        t = ((xx % period) < period / 4) | ((yy % period) < period / 4)
    else:
        raise ValueError(pattern)
    t = np.asarray(t, dtype=np.float64)[..., None]
    return (c1 * (1 - t) + c2 * t).astype(np.uint8)


def _background(w: int, h: int, rng: np.random.Generator) -> Image.Image:
    coarse = rng.integers(0, 256, size=(rng.integers(3, 8), rng.integers(3, 8), 3), dtype=np.uint8)
    base = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
    noise = rng.normal(0, 18, size=(h, w, 3))
    img = Image.fromarray(np.clip(np.asarray(base) * 0.6 + 50 + noise, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(15, 40))):  # clutter: lines and small blobs
        color = tuple(int(c) for c in rng.integers(0, 256, size=3))
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        if rng.random() < 0.5:
            d.line(
                (x, y, x + rng.normal(0, 60), y + rng.normal(0, 60)),
                fill=color,
                width=int(rng.integers(1, 4)),
            )
        else:
            r = rng.uniform(2, 9)
            d.ellipse((x - r, y - r, x + r, y + r), fill=color)
    return img.filter(ImageFilter.GaussianBlur(0.6))


def render_image(
    classes: Sequence[str], rng: np.random.Generator
) -> tuple[Image.Image, list[DemoObject]]:
    """Draw one demo image with 1-6 objects; return the RGB image and its objects."""
    w, h = IMAGE_SIZES[int(rng.integers(len(IMAGE_SIZES)))]
    img = _background(w, h, rng)
    objects = []
    for _ in range(int(rng.integers(1, 7))):
        k = int(rng.integers(len(classes)))
        shape, pattern, hue = class_style(k)
        size = min(w, h) * float(np.exp(rng.uniform(np.log(0.1), np.log(0.9))))
        aspect = float(np.exp(rng.uniform(-0.4, 0.4)))
        ow, oh = max(8, int(size * aspect)), max(8, int(size / aspect))
        # a few objects are placed across the border and cut by it
        x0 = int(rng.integers(-ow // 4, w - 3 * ow // 4)) if ow < w else 0
        y0 = int(rng.integers(-oh // 4, h - 3 * oh // 4)) if oh < h else 0
        sprite = Image.fromarray(_texture(pattern, ow, oh, hue, rng))
        img.paste(sprite, (x0, y0), _shape_mask(shape, ow, oh))
        bx0, by0, bx1, by1 = max(0, x0), max(0, y0), min(w, x0 + ow), min(h, y0 + oh)
        truncated = (bx0, by0, bx1, by1) != (x0, y0, x0 + ow, y0 + oh)
        difficult = min(bx1 - bx0, by1 - by0) < 40 and rng.random() < 0.5
        pose = POSES[int(rng.integers(len(POSES)))]
        objects.append(DemoObject(classes[k], bx0, by0, bx1, by1, difficult, truncated, pose))
    return img, objects


# --- persons of the Action task: a stick figure whose action shows in its pose or prop -------

SHOULDER, HIP = (0.5, 0.27), (0.5, 0.55)  # joints of a figure, as fractions of its box
FEET = ((0.38, 1.0), (0.62, 1.0))  # standing
HANDS = ((0.3, 0.58), (0.7, 0.58))  # arms down
POSE_LEGS = {
    "walking": ((0.1, 1.0), (0.9, 1.0)),
    "running": ((0.0, 0.9), (1.0, 0.8)),
    "jumping": ((0.2, 0.72), (0.8, 0.72)),
    "ridingbike": ((0.45, 0.82), (0.62, 0.9)),
}
POSE_ARMS = {
    "jumping": ((0.1, 0.0), (0.9, 0.0)),
    "walking": ((0.22, 0.5), (0.8, 0.42)),
    "running": ((0.15, 0.3), (0.9, 0.5)),
    "reading": ((0.38, 0.42), (0.62, 0.42)),
    "ridingbike": ((0.85, 0.42), (0.8, 0.45)),
    "phoning": ((0.3, 0.58), (0.62, 0.14)),
    "takingphoto": ((0.4, 0.16), (0.6, 0.16)),
}
PROPS = {  # (fractions of the box x0, y0, x1, y1, colour)
    "phoning": (0.56, 0.06, 0.68, 0.22, (20, 20, 25)),
    "reading": (0.22, 0.32, 0.78, 0.5, (245, 245, 235)),
    "takingphoto": (0.36, 0.08, 0.64, 0.2, (15, 15, 15)),
}


def _person_pose(done: tuple[str, ...]) -> tuple[tuple, tuple, list[tuple]]:
    """Feet, hands and props of a figure doing `done`; actions with a prop come last, so that
    their arms win and two actions (walking and phoning) show together."""
    legs, arms, props = FEET, HANDS, []
    for action in sorted(done, key=lambda a: a in PROPS):
        legs = POSE_LEGS.get(action, legs)
        arms = POSE_ARMS.get(action, arms)
        if action in PROPS:
            props.append(PROPS[action])
    return legs, arms, props


def draw_person(
    img: Image.Image,
    box: tuple[int, int, int, int],
    done: tuple[str, ...],
    rng: np.random.Generator,
) -> None:
    """Draw a figure doing `done` into the integer box ``(x0, y0, x1, y1)`` of `img`: head,
    body, limbs in the pose of its actions, props (phone, book, camera, bicycle wheels)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0

    def at(point: tuple[float, float]) -> tuple[float, float]:
        return x0 + point[0] * w, y0 + point[1] * h

    d = ImageDraw.Draw(img)
    cloth = tuple(int(c) for c in rng.integers(30, 230, size=3))
    skin = tuple(int(c) for c in (rng.integers(150, 240), rng.integers(100, 190), 90))
    width = max(3, int(0.07 * h))
    legs, arms, props = _person_pose(done)
    if "ridingbike" in done:
        r = 0.16 * h
        for cx in (0.18, 0.82):
            cxp, cyp = at((cx, 0.84))
            d.ellipse((cxp - r, cyp - r, cxp + r, cyp + r), outline=(30, 30, 30), width=width // 2)
        d.line(
            [at((0.18, 0.84)), at((0.45, 0.62)), at((0.82, 0.84))],
            fill=(180, 30, 30),
            width=width // 2,
        )
        d.line([at((0.45, 0.62)), at((0.8, 0.45))], fill=(180, 30, 30), width=width // 2)
    for foot in legs:
        knee = (
            (HIP[0] + foot[0]) / 2 + (0.12 if "jumping" in done else 0.0),
            (HIP[1] + foot[1]) / 2,
        )
        d.line([at(HIP), at(knee), at(foot)], fill=cloth, width=width, joint="curve")
    d.line([at(SHOULDER), at(HIP)], fill=cloth, width=int(width * 2.2))
    for hand in arms:
        elbow = ((SHOULDER[0] + hand[0]) / 2, (SHOULDER[1] + hand[1]) / 2 + 0.05)
        d.line([at(SHOULDER), at(elbow), at(hand)], fill=skin, width=max(2, width * 2 // 3))
    hx, hy = at((0.5, 0.12))
    r = 0.1 * h
    d.ellipse((hx - r * 0.8, hy - r, hx + r * 0.8, hy + r), fill=skin)
    for px0, py0, px1, py1, colour in props:
        d.rectangle((*at((px0, py0)), *at((px1, py1))), fill=colour)


def render_action_image(
    actions: Sequence[str], rng: np.random.Generator
) -> tuple[Image.Image, list[DemoObject]]:
    """Draw one image of 1-3 persons side by side, each doing one of `actions` (one in six
    doing two); return the RGB image and its person objects with their actions."""
    w, h = IMAGE_SIZES[int(rng.integers(len(IMAGE_SIZES)))]
    img = _background(w, h, rng)
    count = int(rng.integers(1, 4))
    slot = w / count
    objects = []
    for k in range(count):
        done = tuple(rng.choice(actions, size=2 if rng.random() < 1 / 6 else 1, replace=False))
        ph = int(h * rng.uniform(0.5, 0.9))
        pw = min(int(slot * 0.95), int(ph * (0.9 if "ridingbike" in done else 0.55)))
        px = int(k * slot + rng.uniform(0, max(1.0, slot - pw)))
        py = int(rng.uniform(0, h - ph))
        draw_person(img, (px, py, px + pw, py + ph), done, rng)
        pose = POSES[int(rng.integers(len(POSES)))]
        objects.append(DemoObject("person", px, py, px + pw, py + ph, False, False, pose, done))
    return img, objects


def annotation_xml(
    folder: str,
    image_id: str,
    width: int,
    height: int,
    objects: Sequence[DemoObject],
    actions: Sequence[str] = (),
) -> str:
    """Return the VOC XML annotation of an image (boxes 1-based inclusive, as the devkit);
    `folder` is the year directory's name, e.g. ``VOC2007``. Persons of the Action task get an
    ``<actions>`` block with every one of `actions` as 0 or 1, as VOC2012 writes them."""
    parts = [
        "<annotation>",
        f"\t<folder>{escape(folder)}</folder>",
        f"\t<filename>{escape(image_id)}.jpg</filename>",
        "\t<source>",
        "\t\t<database>voc-transfer synthetic demo</database>",
        f"\t\t<annotation>PASCAL {escape(folder)}</annotation>",
        "\t\t<image>generated</image>",
        "\t</source>",
        f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>",
        "\t\t<depth>3</depth>\n\t</size>",
        "\t<segmented>0</segmented>",
    ]
    for o in objects:
        parts += [
            "\t<object>",
            f"\t\t<name>{escape(o.name)}</name>",
            f"\t\t<pose>{o.pose}</pose>",
            f"\t\t<truncated>{int(o.truncated)}</truncated>",
            f"\t\t<difficult>{int(o.difficult)}</difficult>",
            *action_lines(o.actions, actions),
            "\t\t<bndbox>",
            f"\t\t\t<xmin>{o.x0 + 1}</xmin>\n\t\t\t<ymin>{o.y0 + 1}</ymin>",
            f"\t\t\t<xmax>{o.x1}</xmax>\n\t\t\t<ymax>{o.y1}</ymax>",
            "\t\t</bndbox>",
            "\t</object>",
        ]
    parts.append("</annotation>\n")
    return "\n".join(parts)


def action_lines(done: tuple[str, ...] | None, actions: Sequence[str]) -> list[str]:
    """The ``<actions>`` block of a person doing `done` (none for an object without actions)."""
    if done is None:
        return []
    flags = [f"\t\t\t<{a}>{int(a in done)}</{a}>" for a in actions]
    return ["\t\t<actions>", *flags, "\t\t</actions>"]


def class_presence(objects: Sequence[DemoObject], class_name: str) -> int:
    """Return the VOC image-level ground truth of a class: 1, -1, or 0 (only difficult ones)."""
    of_class = [o for o in objects if o.name == class_name]
    if any(not o.difficult for o in of_class):
        return 1
    return 0 if of_class else -1


def write_action_sets(
    directory: Path,
    persons: dict[str, list[tuple[str, ...]]],
    actions: Sequence[str],
    n_trainval: int,
) -> None:
    """Write ``<split>.txt`` (``<image_id> <person>``) and ``<action>_<split>.txt``
    (``<image_id> <person> 1|-1``) of the Action task into `directory`: the first `n_trainval`
    images of `persons` (``{image_id: [actions of its objects]}``) halved into train and val,
    the rest test (when there is a rest)."""
    ids = list(persons)
    splits = {
        "train": ids[: n_trainval // 2],
        "val": ids[n_trainval // 2 : n_trainval],
        "trainval": ids[:n_trainval],
    }
    if ids[n_trainval:]:
        splits["test"] = ids[n_trainval:]
    directory.mkdir(parents=True)
    for split, members in splits.items():
        rows = [(i, k + 1, done) for i in members for k, done in enumerate(persons[i])]
        (directory / f"{split}.txt").write_text("".join(f"{i} {k}\n" for i, k, _ in rows))
        for a in actions:
            lines = "".join(f"{i} {k} {1 if a in done else -1:2d}\n" for i, k, done in rows)
            (directory / f"{a}_{split}.txt").write_text(lines)


def write_main_sets(
    main: Path, splits: dict[str, list[str]], truth: dict[str, dict[str, int]]
) -> None:
    """Write a devkit's ``ImageSets/Main`` (the directory `main`): ``<split>.txt`` listing each
    split's image ids, and ``<class>_<split>.txt`` with each image's presence (1 / -1 / 0,
    `truth[class][image_id]`) for every class of `truth`."""
    for split, members in splits.items():
        (main / f"{split}.txt").write_text("".join(f"{i}\n" for i in members))
        for c, presence in truth.items():
            lines = "".join(f"{i} {presence[i]:2d}\n" for i in members)
            (main / f"{c}_{split}.txt").write_text(lines)


def check_replaceable(year_dir: Path) -> None:
    """Raise PipelineError unless `year_dir` is absent, an empty directory, or a directory that
    `generate_demo` made (it holds the marker file): a real dataset is never replaced."""
    if not year_dir.exists() and not year_dir.is_symlink():
        return
    is_plain_dir = year_dir.is_dir() and not year_dir.is_symlink()
    if is_plain_dir and ((year_dir / MARKER).is_file() or not any(year_dir.iterdir())):
        return
    raise PipelineError(
        f"{year_dir}: refusing to replace it with the synthetic demo: it was not made by "
        f"`pipeline demo` (no {MARKER} file in it); point demo.root at a new directory"
    )


def generate_demo(
    year_dir: Path,
    classes: Sequence[str],
    *,
    n_trainval: int,
    n_test: int,
    seed: int,
    actions: Sequence[str] = (),
    n_action_trainval: int = 0,
    n_action_test: int = 0,
    jpeg_quality: int = 90,
) -> dict[str, list[str]]:
    """Write a synthetic VOC year directory (``JPEGImages``, ``Annotations``, ``ImageSets/Main``).

    `year_dir` is e.g. ``.../VOCdevkit/VOC2007``; it is built under a temporary name beside it
    and renamed into place. It replaces a previous demo (recognised by the marker file that
    every demo holds) but never anything else: see `check_replaceable`. Trainval is split in
    half into train and val. Writes ``<split>.txt`` and ``<class>_<split>.txt`` (1 / -1 / 0)
    for train, val, trainval and, unless `n_test` is 0 (the VOC2012 layout, whose test
    annotations are not public), test. With `n_action_trainval` > 0, as many more images of
    persons doing `actions` (`render_action_image`) go to ``ImageSets/Action`` (see
    `write_action_sets`), and `n_action_test` to its test split. Returns ``{split: [image
    ids]}`` of ``ImageSets/Main``.
    """
    check_replaceable(year_dir)
    tmp = year_dir.with_name(f".{year_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (tmp / sub).mkdir(parents=True)
    (tmp / MARKER).write_text("synthetic VOC demo made by `pipeline demo`; safe to replace\n")
    ids = [f"{i:06d}" for i in range(1, n_trainval + n_test + 1)]
    splits = {
        "train": ids[: n_trainval // 2],
        "val": ids[n_trainval // 2 : n_trainval],
        "trainval": ids[:n_trainval],
    }
    if n_test:
        splits["test"] = ids[n_trainval:]
    truth: dict[str, dict[str, int]] = {c: {} for c in classes}
    for number, image_id in enumerate(ids):
        img, objects = render_image(classes, np.random.default_rng([seed, number]))
        img.save(tmp / "JPEGImages" / f"{image_id}.jpg", quality=jpeg_quality)
        xml = annotation_xml(year_dir.name, image_id, img.width, img.height, objects)
        (tmp / "Annotations" / f"{image_id}.xml").write_text(xml)
        for c in classes:
            truth[c][image_id] = class_presence(objects, c)
    write_main_sets(tmp / "ImageSets" / "Main", splits, truth)
    if n_action_trainval:
        first = len(ids) + 1
        action_ids = [f"{i:06d}" for i in range(first, first + n_action_trainval + n_action_test)]
        persons = {}
        for number, image_id in enumerate(action_ids):
            img, objects = render_action_image(actions, np.random.default_rng([seed, 1, number]))
            img.save(tmp / "JPEGImages" / f"{image_id}.jpg", quality=jpeg_quality)
            xml = annotation_xml(year_dir.name, image_id, img.width, img.height, objects, actions)
            (tmp / "Annotations" / f"{image_id}.xml").write_text(xml)
            persons[image_id] = [o.actions or () for o in objects]
        write_action_sets(tmp / "ImageSets" / "Action", persons, actions, n_action_trainval)
    if year_dir.exists():
        check_replaceable(year_dir)  # again: it may have appeared while we drew
        shutil.rmtree(year_dir)
    year_dir.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, year_dir)
    return splits
