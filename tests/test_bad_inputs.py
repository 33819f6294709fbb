"""A corpus of bad and unusual inputs, generated from the demo devkit (no binary blobs in git).

Each case breaks one thing about image 000001 (or the split file) of a 6-image trainval split
and runs `pipeline index` as a user does: the run completes, bad inputs are one line naming the
file and counted in problems.json, no traceback is printed, and every good image is indexed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.cli import run_cli

IMAGE, XML = "JPEGImages/000001.jpg", "Annotations/000001.xml"
SPLIT = "ImageSets/Main/trainval.txt"
ALL = [f"{i:06d}" for i in range(1, 7)]


def rewrite(root: Path, name: str, change: Callable[[str], str]) -> None:
    path = root / name
    path.write_text(change(path.read_text()))


def save(root: Path, image: Image.Image, **options) -> None:
    image.save(root / IMAGE, **options)


def size_of(root: Path) -> tuple[int, int]:
    text = (root / XML).read_text()
    return int(re.search(r"<width>(\d+)", text)[1]), int(re.search(r"<height>(\d+)", text)[1])


def first_box(root: Path, xmin: str, ymin: str, xmax: str, ymax: str) -> None:
    def change(text: str) -> str:
        for tag, value in (("xmin", xmin), ("ymin", ymin), ("xmax", xmax), ("ymax", ymax)):
            text = re.sub(f"<{tag}>[^<]*</{tag}>", f"<{tag}>{value}</{tag}>", text, count=1)
        return text

    rewrite(root, XML, change)


def huge_annotated(root: Path) -> None:
    Image.new("1", (20000, 10000)).save(root / IMAGE, format="PNG")
    rewrite(root, XML, lambda t: t.replace(f"<width>{size_of(root)[0]}<", "<width>20000<", 1))
    rewrite(root, XML, lambda t: re.sub(r"<height>\d+<", "<height>10000<", t, count=1))


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">'
        for i in range(1, 10)
    )
    + "]><annotation><size><width>&lol9;</width></size></annotation>"
)
EXTERNAL_ENTITY = (
    '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    "<annotation><folder>&xxe;</folder></annotation>"
)

# (case, how to break the devkit, needle of the one line / summary, skipped?)
SKIPPED: list[tuple[str, Callable[[Path], None], str]] = [
    (
        "truncated jpeg",
        lambda r: (r / IMAGE).write_bytes((r / IMAGE).read_bytes()[:1500]),
        "corrupt or truncated image",
    ),
    ("zero-byte jpeg", lambda r: (r / IMAGE).write_bytes(b""), "not a readable image"),
    ("not an image", lambda r: (r / IMAGE).write_text("<html>404</html>"), "not a readable image"),
    ("missing jpeg", lambda r: (r / IMAGE).unlink(), "image is listed but missing"),
    (
        "oversized jpeg",  # refused from its header, before 63 Mpx are decoded
        lambda r: Image.new("1", (9000, 7000)).save(r / IMAGE, format="PNG"),
        "image is 9000x7000 but its annotation says",
    ),
    (
        "12000x12000 png",
        lambda r: Image.new("1", (12000, 12000)).save(r / IMAGE, format="PNG"),
        "too large to decode safely",
    ),
    ("decompression bomb", huge_annotated, "too large to decode safely"),
    (
        "wrong size",
        lambda r: save(r, Image.new("RGB", (64, 48))),
        "image is 64x48 but its annotation says",
    ),
    (
        "float pixels",
        lambda r: Image.new("F", size_of(r)).save(r / IMAGE, format="TIFF"),
        "floating-point pixels",
    ),
    ("malformed xml", lambda r: (r / XML).write_text("<annotation><size><width>"), "malformed XML"),
    (
        "truncated xml",
        lambda r: (r / XML).write_bytes((r / XML).read_bytes()[:200]),
        "malformed XML",
    ),
    ("missing xml", lambda r: (r / XML).unlink(), "annotation file is missing"),
    (
        "non-utf-8 xml",
        lambda r: (r / XML).write_bytes(
            (r / XML).read_bytes().replace(b"<pose>", b"<pose>\xe9\xff", 1)
        ),
        "malformed XML",
    ),
    ("billion laughs", lambda r: (r / XML).write_text(BILLION_LAUGHS), "malformed XML"),
    ("external entity", lambda r: (r / XML).write_text(EXTERNAL_ENTITY), "malformed XML"),
    ("nan coordinate", lambda r: first_box(r, "nan", "1", "10", "10"), "<xmin> is 'nan'"),
    ("box far outside", lambda r: first_box(r, "1", "1", "9999", "10"), "px outside the"),
    (
        "no size",
        lambda r: rewrite(r, XML, lambda t: re.sub(r"<size>.*?</size>", "", t, flags=re.S)),
        "missing <size>",
    ),
]
KEPT: list[tuple[str, Callable[[Path], None], Callable[[dict], bool]]] = [
    ("greyscale jpeg", lambda r: save(r, Image.open(r / IMAGE).convert("L")), lambda s: True),
    ("cmyk jpeg", lambda r: save(r, Image.open(r / IMAGE).convert("CMYK")), lambda s: True),
    (
        "16-bit png named .jpg",
        lambda r: Image.fromarray(np.full(size_of(r)[::-1], 30000, np.uint16)).save(
            r / IMAGE, format="PNG"
        ),
        lambda s: True,
    ),
    (
        "reversed box",
        lambda r: first_box(r, "50", "10", "20", "40"),
        lambda s: "no area" in s["objects_left_out"][0],
    ),
    (
        "zero-area box",
        lambda r: first_box(r, "20", "10", "19", "40"),
        lambda s: "no area" in s["objects_left_out"][0],
    ),
    (
        "box wholly outside",
        lambda r: first_box(r, "-20", "1", "-10", "10"),
        lambda s: "outside" in s["objects_left_out"][0],
    ),
    (
        "box one pixel out",
        lambda r: first_box(r, "0", "1", "30", "30"),
        lambda s: s["clipped_boxes"] == 1,
    ),
    ("decimal box", lambda r: first_box(r, "10.5", "10.25", "40.75", "60"), lambda s: True),
    (
        "unknown class",
        lambda r: rewrite(
            r, XML, lambda t: re.sub(r"<name>\w+</name>", "<name>unicorn</name>", t, count=1)
        ),
        lambda s: s["outside_classes"] == {"unicorn": 1},
    ),
    (
        "crlf, blank lines, duplicates",
        lambda r: (r / SPLIT).write_bytes(
            b"\r\n".join(i.encode() for i in ["", *ALL, "  ", ALL[0], ""])
        ),
        lambda s: True,
    ),
    (
        "utf-8 bom",
        lambda r: (r / SPLIT).write_bytes(b"\xef\xbb\xbf" + (r / SPLIT).read_bytes()),
        lambda s: True,
    ),
]


def index_and_report(workdir: Path) -> tuple[object, dict]:
    done = run_cli("index", "--split", "trainval", check=False)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    report = json.loads((workdir / "manifests/test-voc/trainval/problems.json").read_text())
    return done, report


@pytest.mark.parametrize(("case", "breaks", "needle"), SKIPPED, ids=[c[0] for c in SKIPPED])
def test_a_bad_input_is_one_line_counted_and_skipped_and_the_rest_is_indexed(
    workdir, case, breaks, needle
):
    breaks(workdir / "VOCdevkit/VOC2007")
    done, report = index_and_report(workdir)
    (problem,) = report["problems"]
    assert report["skipped"] == 1 and report["images"] == 5
    assert "000001" in problem and needle in problem and "\n" not in problem
    lines = [line for line in done.stderr.splitlines() if "000001" in line]
    assert len(lines) == 1 and needle in lines[0]


@pytest.mark.parametrize(("case", "breaks", "check"), KEPT, ids=[c[0] for c in KEPT])
def test_an_unusual_input_is_read_as_the_real_dataset_needs(workdir, case, breaks, check):
    breaks(workdir / "VOCdevkit/VOC2007")
    _, report = index_and_report(workdir)
    assert report["skipped"] == 0 and report["images"] == 6
    assert check(report)


def test_a_path_like_image_id_is_refused_and_the_rest_indexed(workdir):
    split = workdir / "VOCdevkit/VOC2007" / SPLIT
    split.write_text(split.read_text() + "../../../outside\n/etc/passwd\n")
    done, report = index_and_report(workdir)
    assert report["skipped"] == 2 and report["images"] == 6
    assert all("not a plain file name" in p for p in report["problems"])
