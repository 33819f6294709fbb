"""The layering of the code: the library (`pipeline/`) knows neither the stages nor click, and
no stage module imports another (logic two stages share lives in the library), so that a
stage stays a short `run` and editing one stage never re-runs another. Only the CLI
(`stages/cli.py`) reaches the stage modules; the tests drive them too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLI = REPO / "stages" / "cli.py"


def imported_packages(path: Path) -> set[str]:
    """The top-level package of every import in a file, at any depth (functions included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def layering_faults(repo: Path) -> list[str]:
    """Every import that breaks the layering, as ``<file>: imports <package>``."""
    faults = []
    for folder, forbidden in (
        ("pipeline", {"stages", "click"}),
        ("stages", {"stages"}),
        ("benchmarks", {"stages"}),
    ):
        for path in sorted((repo / folder).glob("*.py")):
            if path == repo / "stages" / "cli.py":
                continue
            for package in sorted(imported_packages(path) & forbidden):
                faults.append(f"{path.relative_to(repo)}: imports {package}")
    return faults


def test_no_module_but_the_cli_imports_a_stage_and_the_library_knows_no_click():
    assert layering_faults(REPO) == []


@pytest.mark.parametrize(
    ("where", "line"),
    [
        ("stages/fit_weak.py", "from stages.fit_head import run"),
        ("pipeline/weak.py", "import stages.cli"),
        ("pipeline/head.py", "import click"),
        ("benchmarks/scale_probe.py", "from stages import features"),
    ],
)
def test_a_forbidden_import_is_found_even_inside_a_function(tmp_path, where, line):
    for folder in ("pipeline", "stages", "benchmarks"):
        (tmp_path / folder).mkdir()
    (tmp_path / where).write_text(f"def later():\n    {line}\n")
    assert layering_faults(tmp_path) == [f"{where}: imports {line.split()[1].split('.')[0]}"]
