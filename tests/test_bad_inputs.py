"""A corpus of bad and unusual inputs, generated from the demo devkit (no binary blobs in git).

Each case breaks one thing about image 000001 (or the split file) of a 6-image trainval split
and runs `pipeline index` as a user does: the run completes, bad inputs are one line naming the
file and counted in problems.json, no traceback is printed, and every good image is indexed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from pipeline.core.params import validate_params
from stages import index, tile
from tests.cli import run_cli
from tests.conftest import demo_params

SPLIT = "ImageSets/Main/trainval.txt"
ALL = [f"{i:06d}" for i in range(1, 7)]


def jpg(root: Path, image_id: str) -> Path:
    return root / "JPEGImages" / f"{image_id}.jpg"


def xml(root: Path, image_id: str) -> Path:
    return root / "Annotations" / f"{image_id}.xml"


def rewrite(path: Path, change: Callable[[str], str]) -> None:
    path.write_text(change(path.read_text()))


def size_of(root: Path, image_id: str) -> tuple[int, int]:
    text = xml(root, image_id).read_text()
    return int(re.search(r"<width>(\d+)", text)[1]), int(re.search(r"<height>(\d+)", text)[1])


def first_box(root: Path, image_id: str, xmin: str, ymin: str, xmax: str, ymax: str) -> None:
    def change(text: str) -> str:
        for tag, value in (("xmin", xmin), ("ymin", ymin), ("xmax", xmax), ("ymax", ymax)):
            text = re.sub(f"<{tag}>[^<]*</{tag}>", f"<{tag}>{value}</{tag}>", text, count=1)
        return text

    rewrite(xml(root, image_id), change)


def huge_annotated(root: Path, image_id: str) -> None:
    Image.new("1", (20000, 10000)).save(jpg(root, image_id), format="PNG")
    rewrite(xml(root, image_id), lambda t: re.sub(r"<width>\d+<", "<width>20000<", t, count=1))
    rewrite(xml(root, image_id), lambda t: re.sub(r"<height>\d+<", "<height>10000<", t, count=1))


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

BOM = b"\xef\xbb\xbf"


def png_with(path: Path, *, text: bool = False, icc: bool = False) -> None:
    """Replace an image by a PNG of its size whose text or ICC chunk inflates to 4 MB (a few
    KB on disk): PIL refuses to decompress it."""
    image = Image.open(path)
    info = PngImagePlugin.PngInfo()
    if text:
        info.add_text("comment", "0" * (4 << 20), zip=True)
    image.save(path, format="PNG", pnginfo=info, icc_profile=b"\0" * (4 << 20) if icc else None)


def fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def padded(path: Path, size: int) -> None:
    text = path.read_text()
    path.write_text(text.replace("</annotation>", " " * size + "</annotation>"))


def linked_outside(path: Path) -> None:
    """Move the file out of the dataset (beside the VOCdevkit) and link it back."""
    outside = path.parents[3] / f"elsewhere-{path.name}"
    path.rename(outside)
    path.symlink_to(outside)


# (case, how to break the devkit, needle of the one line / summary, skipped?)
Breaker = Callable[[Path, str], None]  # breaks one image (by id) of a devkit
SKIPPED: list[tuple[str, Breaker, str]] = [
    (
        "truncated jpeg",
        lambda r, i: jpg(r, i).write_bytes(jpg(r, i).read_bytes()[:1500]),
        "corrupt or truncated image",
    ),
    ("zero-byte jpeg", lambda r, i: jpg(r, i).write_bytes(b""), "not a readable image"),
    (
        "not an image",
        lambda r, i: jpg(r, i).write_text("<html>404</html>"),
        "not a readable image",
    ),
    ("missing jpeg", lambda r, i: jpg(r, i).unlink(), "image is listed but missing"),
    (
        "oversized jpeg",  # refused from its header, before 63 Mpx are decoded
        lambda r, i: Image.new("1", (9000, 7000)).save(jpg(r, i), format="PNG"),
        "image is 9000x7000 but its annotation says",
    ),
    (
        "12000x12000 png",
        lambda r, i: Image.new("1", (12000, 12000)).save(jpg(r, i), format="PNG"),
        "too large to decode safely",
    ),
    ("decompression bomb", huge_annotated, "too large to decode safely"),
    (
        "wrong size",
        lambda r, i: Image.new("RGB", (64, 48)).save(jpg(r, i)),
        "image is 64x48 but its annotation says",
    ),
    (
        "float pixels",
        lambda r, i: Image.new("F", size_of(r, i)).save(jpg(r, i), format="TIFF"),
        "floating-point pixels",
    ),
    (
        "malformed xml",
        lambda r, i: xml(r, i).write_text("<annotation><size><width>"),
        "malformed XML",
    ),
    (
        "truncated xml",
        lambda r, i: xml(r, i).write_bytes(xml(r, i).read_bytes()[:200]),
        "malformed XML",
    ),
    ("missing xml", lambda r, i: xml(r, i).unlink(), "annotation file is missing"),
    (
        "non-utf-8 xml",
        lambda r, i: xml(r, i).write_bytes(
            xml(r, i).read_bytes().replace(b"<pose>", b"<pose>\xe9\xff", 1)
        ),
        "malformed XML",
    ),
    ("billion laughs", lambda r, i: xml(r, i).write_text(BILLION_LAUGHS), "malformed XML"),
    ("external entity", lambda r, i: xml(r, i).write_text(EXTERNAL_ENTITY), "malformed XML"),
    ("nan coordinate", lambda r, i: first_box(r, i, "nan", "1", "10", "10"), "<xmin> is 'nan'"),
    ("box far outside", lambda r, i: first_box(r, i, "1", "1", "9999", "10"), "px outside the"),
    ("png text bomb", lambda r, i: png_with(jpg(r, i), text=True), "not a readable image"),
    ("png icc bomb", lambda r, i: png_with(jpg(r, i), icc=True), "not a readable image"),
    ("image is a fifo", lambda r, i: fifo(jpg(r, i)), "image is a FIFO, not a file"),
    ("xml is a directory", lambda r, i: directory(xml(r, i)), "annotation file is a directory"),
    ("xml is a fifo", lambda r, i: fifo(xml(r, i)), "annotation file is a FIFO, not a file"),
    ("2 MB xml", lambda r, i: padded(xml(r, i), 2 << 20), "more than the 1,048,576 this reader"),
    ("xml linked outside", lambda r, i: linked_outside(xml(r, i)), "outside dataset.root"),
    ("image linked outside", lambda r, i: linked_outside(jpg(r, i)), "outside dataset.root"),
    (
        "fractional size",
        lambda r, i: rewrite(xml(r, i), lambda t: re.sub(r"<width>\d+<", "<width>333.9<", t)),
        "<width> is '333.9', not whole",
    ),
    ("underscored number", lambda r, i: first_box(r, i, "1_1", "1", "30", "30"), "'1_1'"),
    ("exponent number", lambda r, i: first_box(r, i, "1e1", "1", "30", "30"), "'1e1'"),
    (
        "no size",
        lambda r, i: rewrite(xml(r, i), lambda t: re.sub(r"<size>.*?</size>", "", t, flags=re.S)),
        "missing <size>",
    ),
]
KEPT: list[tuple[str, Breaker, Callable[[dict], bool]]] = [
    (
        "greyscale jpeg",
        lambda r, i: Image.open(jpg(r, i)).convert("L").save(jpg(r, i)),
        lambda s: True,
    ),
    (
        "cmyk jpeg",
        lambda r, i: Image.open(jpg(r, i)).convert("CMYK").save(jpg(r, i)),
        lambda s: True,
    ),
    (
        "16-bit png named .jpg",
        lambda r, i: Image.fromarray(np.full(size_of(r, i)[::-1], 30000, np.uint16)).save(
            jpg(r, i), format="PNG"
        ),
        lambda s: True,
    ),
    (
        "reversed box",
        lambda r, i: first_box(r, i, "50", "10", "20", "40"),
        lambda s: "no area" in s["objects_left_out"][0],
    ),
    (
        "zero-area box",
        lambda r, i: first_box(r, i, "20", "10", "19", "40"),
        lambda s: "no area" in s["objects_left_out"][0],
    ),
    (
        "box wholly outside",
        lambda r, i: first_box(r, i, "-20", "1", "-10", "10"),
        lambda s: "outside" in s["objects_left_out"][0],
    ),
    (
        "box one pixel out",
        lambda r, i: first_box(r, i, "0", "1", "30", "30"),
        lambda s: s["clipped_boxes"] == 1,
    ),
    ("decimal box", lambda r, i: first_box(r, i, "10.5", "10.25", "40.75", "60"), lambda s: True),
    (
        "unknown class",
        lambda r, i: rewrite(
            xml(r, i), lambda t: re.sub(r"<name>\w+</name>", "<name>unicorn</name>", t, count=1)
        ),
        lambda s: s["outside_classes"] == {"unicorn": 1},
    ),
    (
        "crlf, blank lines, duplicates",
        lambda r, i: (r / SPLIT).write_bytes(
            b"\r\n".join(i.encode() for i in ["", *ALL, "  ", ALL[0], ""])
        ),
        lambda s: True,
    ),
    (
        "utf-8 bom",
        lambda r, i: (r / SPLIT).write_bytes(
            BOM + (r / SPLIT).read_bytes().removeprefix(BOM)  # once, however often applied
        ),
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
    breaks(workdir / "VOCdevkit/VOC2007", "000001")
    done, report = index_and_report(workdir)
    (problem,) = report["problems"]
    assert report["skipped"] == 1 and report["images"] == 5
    assert "000001" in problem and needle in problem and "\n" not in problem
    lines = [line for line in done.stderr.splitlines() if "000001" in line]
    assert len(lines) == 1 and needle in lines[0]


@pytest.mark.parametrize(("case", "breaks", "check"), KEPT, ids=[c[0] for c in KEPT])
def test_an_unusual_input_is_read_as_the_real_dataset_needs(workdir, case, breaks, check):
    breaks(workdir / "VOCdevkit/VOC2007", "000001")
    _, report = index_and_report(workdir)
    assert report["skipped"] == 0 and report["images"] == 6
    assert check(report)


def test_a_path_like_image_id_is_refused_and_the_rest_indexed(workdir):
    split = workdir / "VOCdevkit/VOC2007" / SPLIT
    split.write_text(split.read_text() + "../../../outside\n/etc/passwd\n")
    done, report = index_and_report(workdir)
    assert report["skipped"] == 2 and report["images"] == 6
    assert all("not a plain file name" in p for p in report["problems"])


def index_and_tile(root: Path, project: Path) -> dict[str, pd.DataFrame]:
    """Run `index` and `tile` of trainval in-process on the devkit at `root`, writing under
    `project`; return the three manifests."""
    params = validate_params(demo_params(root), "test params")
    here = Path.cwd()
    os.chdir(project)
    try:
        index.run(params, "trainval", strict=False, jobs=1)
        tile.run(params, "trainval")
    finally:
        os.chdir(here)
    manifests = project / params.layout.manifests("trainval")
    return {
        name: pq.read_table(manifests / name).to_pandas()
        for name in ("images.parquet", "objects.parquet", "patches.parquet")
    }


@pytest.fixture(scope="module")
def clean_manifests(demo_root, tmp_path_factory) -> dict[str, pd.DataFrame]:
    return index_and_tile(demo_root, tmp_path_factory.mktemp("clean"))


CORRUPTIONS = [breaks for _, breaks, _ in SKIPPED] + [breaks for _, breaks, _ in KEPT]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    corrupted=st.dictionaries(
        st.sampled_from(ALL), st.integers(0, len(CORRUPTIONS) - 1), min_size=1, max_size=3
    )
)
def test_random_corruptions_never_crash_and_leave_the_good_images_as_in_a_clean_tree(
    corrupted, demo_root, clean_manifests, tmp_path_factory
):
    project = tmp_path_factory.mktemp("corrupted")
    root = project / "VOCdevkit" / "VOC2007"
    shutil.copytree(demo_root, root)
    for image_id, case in corrupted.items():
        CORRUPTIONS[case](root, image_id)
    manifests = index_and_tile(root, project)  # any exception but a skipped input fails
    good = set(ALL) - set(corrupted)
    for name, clean in clean_manifests.items():
        mine = manifests[name]
        pd.testing.assert_frame_equal(
            mine[mine.image_id.isin(good)].reset_index(drop=True),
            clean[clean.image_id.isin(good)].reset_index(drop=True),
        )
