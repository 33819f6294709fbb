"""The layout list of docs/method.md names every module of the code, and nothing else, so that
it cannot drift from the code it describes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def listed_modules(text: str) -> set[str]:
    """The modules the layout section lists, as ``<package>/<subpackage>/.../<module>.py``: the
    ``name.py`` words of each line indented one step (two spaces) under a folder line
    (``name/``) of ``pipeline/`` or ``stages/``, folders nesting by indentation."""
    section = text.split("## 5. Layout", 1)[1]
    block = section.split("```", 2)[1]
    listed: set[str] = set()
    folders: list[tuple[int, str]] = []  # (indentation, name) from the top folder down
    for line in block.splitlines():
        words = line.split()
        if not words:
            continue
        indent = len(line) - len(line.lstrip())
        if indent <= (folders[-1][0] if folders else -1) + 2 or words[0].endswith("/"):
            folders = [(i, name) for i, name in folders if i < indent]
        if words[0].endswith("/") and len(words[0]) > 1:
            folders.append((indent, words[0].rstrip("/")))
        elif folders and folders[0][1] in ("pipeline", "stages") and indent == folders[-1][0] + 2:
            prefix = "/".join(name for _, name in folders)
            listed.update(f"{prefix}/{name}" for name in re.findall(r"\b\w+\.py\b", line))
    return listed


def code_modules(repo: Path) -> set[str]:
    """Every module of the library and the stages, subpackages included, as repo paths."""
    return {
        str(p.relative_to(repo))
        for package in ("pipeline", "stages")
        for p in (repo / package).rglob("*.py")
        if p.name != "__init__.py"
    }


def test_the_layout_list_names_every_module_and_nothing_else():
    listed = listed_modules((REPO / "docs" / "method.md").read_text())
    actual = code_modules(REPO)
    assert sorted(actual - listed) == [], "modules missing from docs/method.md's layout"
    assert sorted(listed - actual) == [], "docs/method.md lists modules that do not exist"


def test_a_module_left_out_or_a_stale_name_is_found():
    layout = (
        "## 5. Layout\n```\npipeline/   lib\n  data/  d\n    voc.py  gone.py   x\n"
        "                  more words.py\n    nets/  n\n      tiny.py  t\n    cut.py  c\n"
        "  loose.py  l\nstages/  s\n  cli.py\ndvc.yaml  g\n```\n"
    )
    assert listed_modules(layout) == {
        "pipeline/data/voc.py",
        "pipeline/data/gone.py",
        "pipeline/data/nets/tiny.py",
        "pipeline/data/cut.py",
        "pipeline/loose.py",
        "stages/cli.py",
    }


def test_a_module_in_a_subpackage_counts_as_code(tmp_path):
    (tmp_path / "pipeline" / "data").mkdir(parents=True)
    (tmp_path / "stages").mkdir()
    (tmp_path / "pipeline" / "data" / "voc.py").write_text("")
    (tmp_path / "pipeline" / "data" / "__init__.py").write_text("")
    assert code_modules(tmp_path) == {"pipeline/data/voc.py"}


def test_the_readme_stays_short():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) < 180, f"README.md has {len(lines)} lines: move detail to docs/"


README_METHODS = {  # the first words of a row of the README's table -> compare.json's method
    "patches 2014": "patches",
    "dense patches": "dense",
    "dense windows": "windows",
    "weak max-pool": "weak",
    "full image + CAM": "cam",
}


def test_the_readme_table_of_the_demo_is_the_committed_comparison():
    compare = json.loads((REPO / "metrics/demo-voc2007/effnet-lite0/compare.json").read_text())
    rows = {}
    for line in (REPO / "README.md").read_text().splitlines():
        cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
        name = next((n for n in README_METHODS if cells[0].startswith(n)), None)
        if line.startswith("| ") and name and len(cells) == 4:
            rows[README_METHODS[name]] = [float(c) for c in cells[1:]]
    assert rows.keys() == compare["methods"].keys()
    for method, shown in rows.items():
        measured = compare["methods"][method]
        expected = [round(measured[k], 3) for k in ("mAP", "pointing", "corloc")]
        assert shown == pytest.approx(expected, abs=5e-4), method
