from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.core.errors import PipelineError
from pipeline.data.image_sets import read_class_image_set, read_image_set
from pipeline.data.images import check_image, load_rgb
from pipeline.data.voc import annotation_path, parse_annotation, read_annotated_image


def write_xml(
    path: Path, objects: str, size: str = "<width>100</width><height>80</height>"
) -> Path:
    path.write_text(f"<annotation><size>{size}<depth>3</depth></size>{objects}</annotation>")
    return path


def obj(name="dog", box=(1, 1, 50, 40), difficult=0, truncated=1) -> str:
    x0, y0, x1, y1 = box
    return (
        f"<object><name>{name}</name><pose>Left</pose><truncated>{truncated}</truncated>"
        f"<difficult>{difficult}</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
        f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
    )


def test_boxes_become_zero_based_half_open_and_flags_are_read(tmp_path):
    xml = write_xml(
        tmp_path / "a.xml", obj(box=(1, 1, 100, 80)) + obj("cat", (10, 20, 30, 40), 1, 0)
    )
    ann = parse_annotation(xml, 5)
    assert (ann.image_id, ann.width, ann.height) == ("a", 100, 80)
    whole, cat = ann.objects
    assert (whole.x0, whole.y0, whole.x1, whole.y1) == (0, 0, 100, 80)
    assert whole.truncated and not whole.difficult
    assert (cat.name, cat.x0, cat.y0, cat.x1, cat.y1, cat.difficult) == ("cat", 9, 19, 30, 40, True)
    assert (ann.clipped, ann.dropped) == (0, ())


def test_boxes_a_few_pixels_outside_are_clipped_and_counted(tmp_path):
    # real VOC has boxes starting at 0 (1-based) or ending one pixel past the border
    xml = write_xml(tmp_path / "a.xml", obj(box=(0, 1, 101, 82)) + obj(box=(5.5, 6, 20.25, 30)))
    ann = parse_annotation(xml, 5)
    clipped, decimal = ann.objects
    assert (clipped.x0, clipped.y0, clipped.x1, clipped.y1) == (0, 0, 100, 80)
    assert (decimal.x0, decimal.x1) == (4.5, 20.25)
    assert ann.clipped == 1


def test_an_object_with_no_area_in_the_image_is_left_out_not_the_image(tmp_path):
    xml = write_xml(
        tmp_path / "a.xml",
        obj(box=(102, 10, 104, 20))  # right of the image, within the tolerance
        + obj(box=(10, 10, 9, 20))  # reversed
        + obj(box=(10, 10, 10, 20))  # zero width: xmin = xmax is one pixel wide, kept
        + obj("cat"),
    )
    ann = parse_annotation(xml, 5)
    assert [o.name for o in ann.objects] == ["dog", "cat"]
    assert len(ann.dropped) == 2 and all(str(xml) in line for line in ann.dropped)
    assert "outside the 100x80 image" in ann.dropped[0] and "no area" in ann.dropped[1]


def test_classes_outside_any_list_are_kept_for_the_stage_to_decide(tmp_path):
    xml = write_xml(tmp_path / "a.xml", obj("unicorn") + obj("dog"))
    assert [o.name for o in parse_annotation(xml, 5).objects] == ["unicorn", "dog"]


def test_voc2012_parts_points_actions_and_missing_flags_parse_as_on_the_real_dataset(tmp_path):
    person = (
        "<object><name>person</name><pose>Unspecified</pose><occluded>1</occluded>"
        "<bndbox><xmin>10</xmin><ymin>5</ymin><xmax>60</xmax><ymax>75</ymax></bndbox>"
        "<point><x>30</x><y>20</y></point>"
        "<actions><jumping>0</jumping><phoning>1</phoning><other>0</other></actions>"
        "<part><name>head</name><bndbox><xmin>20</xmin><ymin>6</ymin><xmax>40</xmax>"
        "<ymax>25</ymax></bndbox></part>"
        "<part><name>hand</name><bndbox><xmin>12</xmin><ymin>30</ymin><xmax>18</xmax>"
        "<ymax>38</ymax></bndbox></part></object>"
    )
    point_only = (
        "<object><name>person</name><point><x>80</x><y>40</y></point>"
        "<actions><other>1</other></actions></object>"
    )
    ann = parse_annotation(write_xml(tmp_path / "2012_000001.xml", person + point_only), 5)
    (only,) = ann.objects
    assert (only.name, only.x0, only.y0, only.x1, only.y1) == ("person", 9, 4, 60, 75)
    assert not only.difficult and not only.truncated
    assert len(ann.dropped) == 1 and "<point> but no <bndbox>" in ann.dropped[0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (obj(box=(1, 1, 120, 20)), "reaches 20 px outside the 100x80 image"),
        (obj(box=(-9, 1, 10, 20)), "reaches 10 px outside"),
        ("<object><name>dog</name></object>", "no <bndbox>"),
        (obj().replace("<xmax>50</xmax>", "<xmax>fifty</xmax>"), "<xmax> is 'fifty'"),
        (obj().replace("<xmax>50</xmax>", "<xmax>nan</xmax>"), "<xmax> is 'nan'"),
        (obj().replace("<ymin>1</ymin>", "<ymin>-inf</ymin>"), "<ymin> is '-inf'"),
    ],
)
def test_bad_annotation_is_one_line_naming_the_file_and_problem(tmp_path, content, message):
    xml = write_xml(tmp_path / "bad.xml", content)
    with pytest.raises(PipelineError) as err:
        parse_annotation(xml, 5)
    text = str(err.value)
    assert str(xml) in text and message in text and "\n" not in text


def test_a_non_finite_size_is_one_line(tmp_path):
    xml = write_xml(tmp_path / "bad.xml", obj(), size="<width>nan</width><height>80</height>")
    with pytest.raises(PipelineError, match="<width> is 'nan'"):
        parse_annotation(xml, 5)


def test_malformed_and_missing_xml_are_reported(tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_text("<annotation><size>")
    with pytest.raises(PipelineError, match="malformed XML"):
        parse_annotation(bad, 5)
    with pytest.raises(PipelineError, match="missing"):
        parse_annotation(tmp_path / "nope.xml", 5)
    bad.write_text("<annotation></annotation>")
    with pytest.raises(PipelineError, match="missing <size>"):
        parse_annotation(bad, 5)


def test_image_sets_with_bom_crlf_and_blank_lines_read_every_id(tmp_path):
    main = tmp_path / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (main / "val.txt").write_bytes(b"\xef\xbb\xbf2008_000002\r\n   \r\n2008_000003\r\n\r\n")
    assert read_image_set(tmp_path, "val") == ["2008_000002", "2008_000003"]
    (main / "bad.txt").write_bytes(b"2008_\xff\n")
    with pytest.raises(PipelineError, match="bad.txt: not UTF-8"):
        read_image_set(tmp_path, "bad")


def test_image_sets_and_class_files(demo_root):
    assert read_image_set(demo_root, "trainval") == [f"{i:06d}" for i in range(1, 7)]
    truth = read_class_image_set(demo_root, "bird", "test")
    assert set(truth) == {"000007", "000008", "000009"} and set(truth.values()) <= {-1, 0, 1}
    assert read_class_image_set(demo_root, "bird", "nosuchsplit") is None
    with pytest.raises(PipelineError, match=r"Main/nosuchsplit.txt: split file is missing"):
        read_image_set(demo_root, "nosuchsplit")


def test_demo_annotations_parse_and_agree_with_class_files(demo_root):
    truth = read_class_image_set(demo_root, "aeroplane", "trainval")
    for image_id in read_image_set(demo_root, "trainval"):
        ann = parse_annotation(annotation_path(demo_root, image_id), 5)
        planes = [o for o in ann.objects if o.name == "aeroplane"]
        expected = 1 if any(not o.difficult for o in planes) else (0 if planes else -1)
        assert truth[image_id] == expected


def test_greyscale_and_cmyk_jpegs_are_converted_to_rgb(tmp_path):
    grey = tmp_path / "grey.jpg"
    Image.new("L", (30, 20), 128).save(grey)
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (30, 20), (0, 255, 255, 0)).save(cmyk)
    g, c = load_rgb(grey), load_rgb(cmyk)
    assert g.shape == c.shape == (20, 30, 3) and g.dtype == np.uint8
    assert abs(int(g[10, 10, 0]) - 128) <= 2
    assert c[10, 10, 0] > 200 and c[10, 10, 1] < 60  # red


def test_exif_orientation_is_not_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.new("RGB", (40, 20), (10, 200, 10)).save(path, exif=exif)
    assert load_rgb(path).shape == (20, 40, 3)


def test_truncated_corrupt_and_missing_images_are_reported(tmp_path):
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)).save(good)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:3000])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not a jpeg")
    with pytest.raises(PipelineError, match=r"truncated.jpg: corrupt or truncated"):
        load_rgb(truncated)
    with pytest.raises(PipelineError, match=r"garbage.jpg: not a readable image"):
        load_rgb(garbage)
    with pytest.raises(PipelineError, match=r"nope.jpg: image is listed but missing"):
        load_rgb(tmp_path / "nope.jpg")


def test_a_16_bit_png_named_jpg_is_scaled_to_8_bits_not_saturated(tmp_path):
    path = tmp_path / "deep.jpg"
    Image.fromarray(np.full((20, 30), 40000, np.uint16)).save(path, format="PNG")
    pixels = load_rgb(path)
    assert pixels.shape == (20, 30, 3) and pixels.dtype == np.uint8
    assert (pixels == 40000 >> 8).all()


def test_float_pixels_are_refused_in_one_line(tmp_path):
    path = tmp_path / "float.tif"
    Image.new("F", (10, 10), 0.5).save(path)
    with pytest.raises(PipelineError, match=r"float.tif: floating-point pixels"):
        load_rgb(path)


@pytest.mark.parametrize("size", [(12000, 12000), (20000, 10000)])
def test_huge_images_are_refused_before_decoding(tmp_path, size):
    path = tmp_path / "huge.png"
    Image.new("1", size).save(path)  # a few KB on disk, hundreds of MB decoded
    with pytest.raises(PipelineError) as err:
        load_rgb(path)
    assert str(err.value).startswith(f"{path}: image ")
    assert "refused before decoding" in str(err.value) or "too large" in str(err.value)


def test_a_size_that_disagrees_with_the_annotation_is_caught_from_the_header(tmp_path):
    path = tmp_path / "small.jpg"
    Image.new("RGB", (40, 30)).save(path)
    with pytest.raises(PipelineError, match=r"small.jpg: image is 40x30 but its annotation says"):
        check_image(path, 500, 375)


@pytest.mark.parametrize("image_id", ["../outside", "/etc/passwd", "a/b", "..", "", "a\\b"])
def test_path_like_image_ids_are_refused_naming_the_id(tmp_path, image_id):
    with pytest.raises(PipelineError) as err:
        read_annotated_image(tmp_path, image_id, 5)
    assert repr(image_id) in str(err.value) and "not a plain file name" in str(err.value)
