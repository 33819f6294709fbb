"""How long a backbone pass over a split took, recorded beside the metrics so that the
comparison of methods can report test and training cost from the runs that computed them."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.core.atomic import write_json


def record_backbone_time(
    path: Path, images: int, seconds: float, device: str, **counts: int
) -> None:
    """Write the time of a backbone pass over `images` images (``seconds_per_image`` among
    other fields, `counts` such as patches added). A run that computed nothing (every shard
    kept) leaves an existing record as it is, and otherwise writes one with null times."""
    if images == 0 and path.is_file():
        return
    record = {
        "images": images,
        "seconds": round(seconds, 3) if images else None,
        "seconds_per_image": round(seconds / images, 4) if images else None,
        "device": device,
        **counts,
    }
    write_json(record, path)


def recorded_number(path: Path, key: str) -> float | None:
    """A number a stage recorded in a JSON file (a backbone's ``seconds_per_image``, a fit
    stage's ``train_seconds``), or None when it recorded none (a cache copied in, every shard
    already computed on the first run here, the file missing or unreadable)."""
    try:
        value = json.loads(path.read_text()).get(key)
    except (FileNotFoundError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None
