"""Pictures of per-class maps: overlays on the image, panels side by side, captions, and which
images of a split are drawn, with their boxes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from pipeline.core.errors import PipelineError
from pipeline.scoring.localization import region_box

PANEL_GAP = 6  # white pixels between two panels
CAPTION_FONT_SIZE = 16  # pixels; legible on a 500x375 VOC image
KEY_FONT_SIZE = 14
TRUTH_COLOUR = (255, 255, 255)  # the ground-truth boxes
FOUND_COLOUR = (255, 0, 255)  # the box the localization metrics take from the map (CorLoc)
PEAK_COLOUR = (255, 255, 255)  # the map's highest pixel (pointing)
BAR_WIDTH = 16  # pixels of the colour bar
KEY_WIDTH = BAR_WIDTH + 2 * KEY_FONT_SIZE + 8  # the bar with its tick labels
LEGEND_HEIGHT = 2 * KEY_FONT_SIZE  # the strip of the legend below the panels


def overlay(
    image: np.ndarray,
    heat_map: np.ndarray | None,
    caption: str,
    boxes: np.ndarray,
    *,
    colormap: str = "jet",
    alpha: float = 0.5,
) -> Image.Image:
    """One panel: the RGB image ``[H, W, 3]`` uint8 blended with the colour-mapped heat map
    ``[H, W]`` (probabilities in [0, 1], not rescaled, so panels compare; None: the image
    alone), the given boxes ``[M, 4]`` (pixels, half-open) outlined in white, and, on a map,
    the box its largest region gives (`region_box`, what CorLoc scores) in magenta and its peak
    (what pointing scores) as a white ring; `caption` in the top-left corner, followed on a map
    by the peak's probability."""
    if heat_map is None:
        panel = Image.fromarray(image)
    else:
        colours = matplotlib.colormaps[colormap](np.clip(heat_map, 0, 1))[..., :3] * 255
        blended = (1 - alpha) * image.astype(np.float64) + alpha * colours
        panel = Image.fromarray(blended.round().astype(np.uint8))
        caption = f"{caption}  peak {float(heat_map.max()):.2f}"
    draw = ImageDraw.Draw(panel)
    for x0, y0, x1, y1 in np.asarray(boxes).reshape(-1, 4):
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=TRUTH_COLOUR, width=2)
    if heat_map is not None:
        x0, y0, x1, y1 = region_box(heat_map)
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=FOUND_COLOUR, width=2)
        y, x = np.unravel_index(int(np.argmax(heat_map)), heat_map.shape)
        draw.ellipse((x - 7, y - 7, x + 7, y + 7), outline=(0, 0, 0), width=4)
        draw.ellipse((x - 6, y - 6, x + 6, y + 6), outline=PEAK_COLOUR, width=2)
    font = ImageFont.load_default(size=CAPTION_FONT_SIZE)
    left, top, right, bottom = draw.textbbox((6, 4), caption, font=font)
    draw.rectangle((left - 4, top - 3, right + 4, bottom + 3), fill=(0, 0, 0))
    draw.text((6, 4), caption, fill=(255, 255, 255), font=font)
    return panel


def side_by_side(
    panels: Sequence[Image.Image], gap: int = PANEL_GAP, colormap: str | None = None
) -> Image.Image:
    """The panels left to right on a white background, `gap` pixels apart; with a `colormap`,
    followed by its colour bar (probability 0 to 1, the scale of every panel) and with a
    legend of the marks below."""
    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    height = max(p.height for p in panels)
    font = ImageFont.load_default(size=KEY_FONT_SIZE)
    bar = colour_bar(colormap, height, font) if colormap else None
    legend = LEGEND_HEIGHT if colormap else 0
    sheet = Image.new(
        "RGB",
        (width + (gap + bar.width if bar else 0), height + legend),
        (255, 255, 255),
    )
    x = 0
    for p in panels:
        sheet.paste(p, (x, 0))
        x += p.width + gap
    if bar:
        sheet.paste(bar, (x, 0))
        draw = ImageDraw.Draw(sheet)
        draw.rectangle((0, height, sheet.width, sheet.height), fill=(40, 40, 40))
        draw_legend(draw, (6, height + legend // 4), font)
    return sheet


def colour_bar(colormap: str, height: int, font: ImageFont.ImageFont) -> Image.Image:
    """A vertical bar of `colormap` from probability 1 (top) to 0 (bottom), `KEY_WIDTH` by
    `height` pixels with its tick labels, ticked at 0, 0.5 and 1, titled ``p``."""
    margin = KEY_FONT_SIZE
    span = max(height - 2 * margin, 2)
    values = np.linspace(1, 0, span)[:, None].repeat(BAR_WIDTH, 1)
    colours = (matplotlib.colormaps[colormap](values)[..., :3] * 255).round().astype(np.uint8)
    bar = Image.new("RGB", (KEY_WIDTH, height), (255, 255, 255))
    bar.paste(Image.fromarray(colours), (0, margin))
    draw = ImageDraw.Draw(bar)
    draw.rectangle((0, margin, BAR_WIDTH - 1, margin + span - 1), outline=(0, 0, 0))
    for value in (1.0, 0.5, 0.0):
        y = margin + round((1 - value) * (span - 1))
        draw.line((BAR_WIDTH, y, BAR_WIDTH + 3, y), fill=(0, 0, 0))
        draw.text((BAR_WIDTH + 5, y), f"{value:g}", fill=(0, 0, 0), font=font, anchor="lm")
    draw.text((BAR_WIDTH // 2, margin // 2), "p", fill=(0, 0, 0), font=font, anchor="mm")
    return bar


def draw_legend(draw: ImageDraw.ImageDraw, at: tuple[int, int], font: ImageFont.ImageFont) -> None:
    """One line from `at` saying what each mark is: the ground-truth boxes, the box the map's
    largest region gives (CorLoc) and the map's peak (pointing)."""
    x, y = at
    size = KEY_FONT_SIZE
    for colour, text, ring in (
        (TRUTH_COLOUR, "ground truth", False),
        (FOUND_COLOUR, "box from the map (CorLoc)", False),
        (PEAK_COLOUR, "peak of the map (pointing)", True),
    ):
        box = (x, y, x + size, y + size)
        if ring:
            draw.ellipse(box, outline=colour, width=2)
        else:
            draw.rectangle(box, outline=colour, width=2)
        draw.text((box[2] + 5, y), text, fill=(255, 255, 255), font=font)
        x = draw.textbbox((box[2] + 5, y), text, font=font)[2] + 18


def render_top_classes(
    image: np.ndarray,
    maps: np.ndarray,
    classes: Sequence[str],
    boxes_by_label: Mapping[int, np.ndarray],
    *,
    top_classes: int,
    colormap: str,
    alpha: float,
) -> Image.Image:
    """The image beside the overlays of its `top_classes` classes with the highest map mean.

    Takes the RGB image ``[H, W, 3]``, its class maps ``[C, H, W]`` (the map of label l at
    ``l - 1``, as every method gives them), the class names (label ``i + 1`` = ``classes[i]``)
    and the boxes to outline per label. Each caption gives the class and its map's mean (the
    k = 1 image score).
    """
    means = maps.reshape(len(classes), -1).mean(1)
    top = np.argsort(-means, kind="stable")[:top_classes]
    panels = [overlay(image, None, "image", np.zeros((0, 4)))]
    for c in top:
        caption = f"{classes[c]}  mean {means[c]:.2f}"
        boxes = boxes_by_label.get(int(c) + 1, np.zeros((0, 4)))
        panels.append(overlay(image, maps[c], caption, boxes, colormap=colormap, alpha=alpha))
    return side_by_side(panels, colormap=colormap)


def boxes_by_image(objects: pd.DataFrame) -> dict[str, dict[int, np.ndarray]]:
    """The boxes ``[M, 4]`` ``(x0, y0, x1, y1)`` of each image's non-difficult objects of the
    class list, per label: ``{image_id: {label: boxes}}`` from an objects table."""
    clear = objects[~objects.difficult & (objects.label > 0)]
    return {
        image_id: {
            int(label): group[["x0", "y0", "x1", "y1"]].to_numpy()
            for label, group in rows.groupby("label")
        }
        for image_id, rows in clear.groupby("image_id")
    }


def chosen_images(wanted: int | Sequence[str], split_images: list[str], split: str) -> set[str]:
    """The images to draw (``heatmaps.images``): the first `wanted` of the split's images, or
    those it lists; PipelineError naming the ones the split lacks."""
    chosen = set(split_images[:wanted] if isinstance(wanted, int) else wanted)
    unknown = chosen - set(split_images)
    if unknown:
        raise PipelineError(f"heatmaps.images: not in split {split!r}: {sorted(unknown)}")
    return chosen
