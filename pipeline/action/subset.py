"""Whether a dataset has an Action subset, and how the action stages say that it has none.

Most VOC-format datasets (VOC2007, a VOC2012 copy without the Action files, a user's own classes)
have no ``ImageSets/Action``. The object task runs alone on them: `action-samples` writes an
empty persons table and, in place of the patch shards, a marker file holding the one-line
reason; every later action stage finds the marker in its input, writes the same marker (or, for
a trained model, a checkpoint that holds only the reason) in place of its output, and logs the
line. Nothing downstream can take a marked directory for data. When the subset appears, its
files change the DVC dependency ``ImageSets`` and the action stages run for real, removing the
markers.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core.atomic import write_text

NO_ACTION_SUBSET = "no-action-subset.txt"  # in place of an action output: why there is none


def missing_action_subset(root: Path) -> str | None:
    """The one-line reason when the dataset at `root` has no Action subset (no
    ``ImageSets/Action`` directory), else None."""
    directory = root / "ImageSets" / "Action"
    if directory.is_dir():
        return None
    return f"{directory}: no Action subset in this dataset; the action task is skipped"


def skipped_reason(directory: Path) -> str | None:
    """The reason an action stage wrote in `directory` in place of its output, or None when
    the directory holds real output (or does not exist)."""
    marker = directory / NO_ACTION_SUBSET
    return marker.read_text().strip() if marker.is_file() else None


def mark_skipped(directory: Path, reason: str) -> None:
    """Write `reason` in `directory` (created if missing) in place of the stage's output."""
    write_text(reason + "\n", directory / NO_ACTION_SUBSET)


def clear_skipped(directory: Path) -> None:
    """Remove the marker of `directory`, before real output is written there."""
    (directory / NO_ACTION_SUBSET).unlink(missing_ok=True)
