"""Pictures of per-class maps: overlays on the image, panels side by side, captions, and which
images of a split are drawn, with their boxes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from pipeline.core.errors import PipelineError

PANEL_GAP = 6  # white pixels between two panels
CAPTION_FONT_SIZE = 16  # pixels; legible on a 500x375 VOC image


def overlay(
    image: np.ndarray,
    heat_map: np.ndarray,
    caption: str,
    boxes: np.ndarray,
    *,
    colormap: str = "jet",
    alpha: float = 0.5,
) -> Image.Image:
    """One panel: the RGB image ``[H, W, 3]`` uint8 blended with the colour-mapped heat map
    ``[H, W]`` (values in [0, 1], not rescaled, so panels compare), the given boxes ``[M, 4]``
    outlined in white and `caption` in the top-left corner."""
    colours = matplotlib.colormaps[colormap](np.clip(heat_map, 0, 1))[..., :3] * 255
    blended = (1 - alpha) * image.astype(np.float64) + alpha * colours
    panel = Image.fromarray(blended.round().astype(np.uint8))
    draw = ImageDraw.Draw(panel)
    for x0, y0, x1, y1 in np.asarray(boxes).reshape(-1, 4):
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=(255, 255, 255), width=2)
    font = ImageFont.load_default(size=CAPTION_FONT_SIZE)
    left, top, right, bottom = draw.textbbox((6, 4), caption, font=font)
    draw.rectangle((left - 4, top - 3, right + 4, bottom + 3), fill=(0, 0, 0))
    draw.text((6, 4), caption, fill=(255, 255, 255), font=font)
    return panel


def side_by_side(panels: Sequence[Image.Image], gap: int = PANEL_GAP) -> Image.Image:
    """The panels left to right on a white background, `gap` pixels apart."""
    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    height = max(p.height for p in panels)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    x = 0
    for p in panels:
        sheet.paste(p, (x, 0))
        x += p.width + gap
    return sheet


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
    panels = [overlay(image, np.zeros(image.shape[:2]), "image", np.zeros((0, 4)), alpha=0)]
    for c in top:
        caption = f"{classes[c]}  mean p {means[c]:.2f}"
        boxes = boxes_by_label.get(int(c) + 1, np.zeros((0, 4)))
        panels.append(overlay(image, maps[c], caption, boxes, colormap=colormap, alpha=alpha))
    return side_by_side(panels)


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
