"""The layout list of docs/method.md names every module of the code, and nothing else, so that
it cannot drift from the code it describes."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def listed_modules(text: str) -> set[str]:
    """The modules the layout section lists, as ``<package>/<module>.py``: the ``name.py``
    words of the lines indented under ``pipeline/`` and ``stages/`` in its code block."""
    section = text.split("## 5. Layout", 1)[1]
    block = section.split("```", 2)[1]
    listed, package = set(), None
    for line in block.splitlines():
        top = re.match(r"^(\S+)/\s", line + " ")
        if top:
            package = top.group(1) if top.group(1) in ("pipeline", "stages") else None
        elif package and line.startswith("  ") and line[2] != " ":
            listed.update(f"{package}/{name}" for name in re.findall(r"\b\w+\.py\b", line))
    return listed


def code_modules(repo: Path) -> set[str]:
    return {
        str(p.relative_to(repo))
        for package in ("pipeline", "stages")
        for p in (repo / package).glob("*.py")
        if p.name != "__init__.py"
    }


def test_the_layout_list_names_every_module_and_nothing_else():
    listed = listed_modules((REPO / "docs" / "method.md").read_text())
    actual = code_modules(REPO)
    assert sorted(actual - listed) == [], "modules missing from docs/method.md's layout"
    assert sorted(listed - actual) == [], "docs/method.md lists modules that do not exist"


def test_a_module_left_out_or_a_stale_name_is_found():
    layout = (
        "## 5. Layout\n```\npipeline/   lib\n  voc.py  gone.py   x\nstages/  s\n  cli.py\n```\n"
    )
    assert listed_modules(layout) == {"pipeline/voc.py", "pipeline/gone.py", "stages/cli.py"}


def test_the_readme_stays_short():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) < 180, f"README.md has {len(lines)} lines: move detail to docs/"
