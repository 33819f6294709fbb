"""The comparison's loop over methods (pipeline/scoring/methods.py): what `compare` reports per
method and for the whole split; and the pictures of the maps (pipeline/scoring/map_pictures.py)."""

from __future__ import annotations

import gc
import weakref

import numpy as np
from PIL import Image

from pipeline.scoring.map_pictures import (
    BAR_WIDTH,
    FOUND_COLOUR,
    KEY_FONT_SIZE,
    PANEL_GAP,
    PEAK_COLOUR,
    TRUTH_COLOUR,
    overlay,
    side_by_side,
)
from pipeline.scoring.methods import Scored, compare_methods
from pipeline.scoring.shared_stream import SharedStream

BOXES = {
    "a": {1: np.array([[0.0, 0.0, 4.0, 4.0]])},
    "b": {1: np.array([[4.0, 4.0, 8.0, 8.0]]), 2: np.array([[0.0, 0.0, 8.0, 8.0]])},
}


def stream(with_maps: bool):
    for image_id in ("a", "b"):
        maps = np.zeros((2, 8, 8)) if with_maps else None
        if maps is not None:
            maps[0, 1, 1] = 1.0  # label 1 peaks at (1, 1): inside a's box, outside b's
        yield Scored(image_id, np.array([0.9, 0.1]), maps)


def test_the_pairs_counted_do_not_depend_on_which_method_comes_last():
    # a net without class activation maps (AlexNet) gives CAM no maps: the pairs reported
    # are still those the methods with maps counted, and CAM has no pointing
    compared = compare_methods(
        {"patches": stream(True), "cam": stream(False)},
        ["a", "b"], BOXES, pictured={"b"}, n_classes=2,
        class_aps=lambda s, c: {"x": float(c.sum())},
    )  # fmt: skip
    assert compared.pairs == 3
    assert compared.results["cam"].localization is None
    # a's label 1 and b's label 2 (a flat map peaks at its first pixel, inside b's box of 2)
    assert compared.results["patches"].localization.pointing_hits == 2
    label, maps = compared.pictures["b"]
    assert label == 1 and maps["cam"] is None and maps["patches"].shape == (8, 8)


def test_no_method_with_maps_reports_no_pairs_and_unscored_images_stay_in_the_ranking():
    seen = []

    def class_aps(scores, counts):
        seen.append((scores.copy(), counts.copy()))
        return {"x": 0.5, "y": float("nan")}

    compared = compare_methods(
        {"cam": stream(False)}, ["a", "b", "c"], BOXES, pictured=(), n_classes=2,
        class_aps=class_aps,
    )  # fmt: skip
    assert compared.pairs is None
    assert compared.results["cam"].m_ap == 0.5  # over the classes with a positive
    scores, counts = seen[0]
    assert counts.tolist() == [1, 1, 0] and np.isinf(scores[2]).all()


def test_a_map_panel_marks_the_peak_and_the_box_the_metrics_take_and_the_sheet_has_a_key():
    image = np.full((60, 80, 3), 128, np.uint8)
    heat_map = np.zeros((60, 80))
    heat_map[30:50, 30:50] = 0.8  # one region: its box is (30, 30, 50, 50), its peak (30, 30)
    truth = np.array([[0.0, 25.0, 20.0, 45.0]])
    panel = np.asarray(overlay(image, heat_map, "cat", truth))
    assert tuple(panel[40, 30]) == FOUND_COLOUR and tuple(panel[49, 40]) == FOUND_COLOUR
    assert tuple(panel[35, 0]) == TRUTH_COLOUR
    ring = [tuple(pixel) for pixel in panel[30, 34:38]]  # right of the peak
    assert PEAK_COLOUR in ring
    sheet = side_by_side(
        [overlay(image, None, "image", truth), Image.fromarray(panel)], colormap="jet"
    )
    assert sheet.width > 2 * 80 + PANEL_GAP and sheet.height > 60  # the colour bar, the legend
    bar = np.asarray(sheet)[:60, 2 * 80 + 2 * PANEL_GAP + BAR_WIDTH // 2]
    assert tuple(bar[KEY_FONT_SIZE + 1]) != tuple(bar[60 - KEY_FONT_SIZE - 2])  # 1 above, 0 below


def test_shared_items_are_produced_once_and_each_reader_counts_all_of_their_production():
    now = [0.0]
    produced = []

    def items():  # each item takes 1 s to produce
        for n in range(3):
            now[0] += 1.0
            produced.append(n)
            yield n

    shared = SharedStream(items(), ("a", "b"), clock=lambda: now[0])
    a, b = shared.reader("a"), shared.reader("b")
    got = []
    for _ in range(3):
        got.append((next(a), next(b)))
    assert got == [(0, 0), (1, 1), (2, 2)] and produced == [0, 1, 2]
    assert list(a) == [] and list(b) == []
    assert shared.seconds == 3.0
    # a asked first each time, so it measured the production; b measured none of it
    assert shared.counted("a", 3.5) == 3.5 and shared.counted("b", 0.5) == 3.5
    assert shared.counted("c", 0.5) == 0.5  # not a reader


def test_the_comparison_holds_one_shared_image_at_a_time():
    # an AlexNet-type net's windows are 58 MB per image: an image every method has scored
    # must be let go, not kept until a block of images is done (itertools.tee keeps 57)
    class Windows:  # an image's windows, which only the stream may keep alive
        def __init__(self, image_id):
            self.image_id = image_id

    alive, produced = [], []

    def images():
        for n in range(80):
            item = Windows(f"i{n}")
            produced.append(weakref.ref(item))
            yield item

    def method(shared, name):
        for item in shared.reader(name):
            gc.collect()
            alive.append(sum(ref() is not None for ref in produced))
            yield Scored(item.image_id, np.array([0.5, 0.5]), None)

    shared = SharedStream(images(), ("dense", "weak"))
    ids = [f"i{n}" for n in range(80)]
    compared = compare_methods(
        {"dense": method(shared, "dense"), "weak": method(shared, "weak")},
        ids, BOXES, pictured=(), n_classes=2, class_aps=lambda s, c: {"x": 1.0},
    )  # fmt: skip
    assert len(produced) == 80 and len(alive) == 160
    assert max(alive) <= 3  # this image, the one just scored, and nothing older
    assert set(compared.results) == {"dense", "weak"}
