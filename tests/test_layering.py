"""The layering of the code. The library (`pipeline/`) is cut into subpackages stacked in the
order of `LAYERS`: a module may import its own layer and those below it, never one above, so
that the folders show which code can change which. The library knows neither the stages nor
click, and no stage module imports another (logic two stages share lives in the library), so
that a stage stays a short `run` and editing one stage never re-runs another. Only the CLI
(`stages/cli.py`) reaches the stage modules; the tests drive them too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# bottom to top: each layer of pipeline/ may import those before it, never those after
LAYERS = ("core", "data", "features", "trained", "scoring", "action")


def imported_modules(path: Path) -> set[str]:
    """The dotted name of every absolute import in a file, at any depth (functions included);
    a relative import as ``.`` (the library spells every import out)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add("." if node.level else node.module or "")
    return names


def fault_of(path: Path, module: str, repo: Path) -> str | None:
    """Why importing `module` from the file at `path` breaks the layering, or None."""
    where = path.relative_to(repo).parts
    top = module.split(".")[0]
    if module == ".":
        return "a relative import"
    if where[0] == "stages":
        return "a stage module" if top == "stages" and path.name != "cli.py" else None
    if where[0] == "benchmarks":
        return "a stage module" if top == "stages" else None
    if top in ("stages", "click"):
        return "the CLI's package"
    if top != "pipeline" or module == "pipeline":
        return None
    target = module.split(".")[1]
    if target not in LAYERS:
        return "a module outside every layer"
    if len(where) < 3 or where[1] not in LAYERS:
        return None  # pipeline/__init__.py; a module outside every layer is its own fault
    if LAYERS.index(target) > LAYERS.index(where[1]):
        return f"layer {target}, above {where[1]}"
    return None


def layering_faults(repo: Path) -> list[str]:
    """Every import that breaks the layering, as ``<file>: imports <module> (<why>)``, and
    every library module that sits in no layer."""
    faults = []
    for path in sorted((repo / "pipeline").glob("*.py")):
        if path.name != "__init__.py":
            faults.append(f"{path.relative_to(repo)}: in no layer of {LAYERS}")
    for folder in ("pipeline", "stages", "benchmarks"):
        for path in sorted((repo / folder).rglob("*.py")):
            for module in sorted(imported_modules(path)):
                why = fault_of(path, module, repo)
                if why:
                    faults.append(f"{path.relative_to(repo)}: imports {module} ({why})")
    return faults


def test_every_import_runs_down_the_layers_and_the_library_knows_no_cli():
    assert layering_faults(REPO) == []


def test_every_layer_is_a_package_of_the_library():
    packages = {p.parent.name for p in (REPO / "pipeline").glob("*/__init__.py")}
    assert packages == set(LAYERS)


@pytest.mark.parametrize(
    ("where", "line", "fault"),
    [
        ("stages/fit_weak.py", "from stages.fit_head import run", "stages.fit_head (a stage"),
        ("pipeline/trained/weak.py", "import stages.cli", "stages.cli (the CLI's"),
        ("pipeline/trained/head.py", "import click", "click (the CLI's"),
        ("benchmarks/scale_probe.py", "from stages import features", "stages (a stage"),
        (
            "pipeline/core/params.py",
            "from pipeline.scoring.heatmaps import render",
            "pipeline.scoring.heatmaps (layer scoring, above core",
        ),
        (
            "pipeline/features/nets/tiny.py",
            "import pipeline.trained.head",
            "pipeline.trained.head (layer trained, above features",
        ),
        ("pipeline/data/voc.py", "from pipeline.heatmaps import x", "pipeline.heatmaps (a module"),
        ("pipeline/data/voc.py", "from .labeling import x", ". (a relative"),
    ],
)
def test_a_forbidden_import_is_found_even_inside_a_function(tmp_path, where, line, fault):
    for folder in ("stages", "benchmarks", *(f"pipeline/{layer}" for layer in LAYERS)):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / where).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / where).write_text(f"def later():\n    {line}\n")
    (faults,) = layering_faults(tmp_path)
    assert faults.startswith(f"{where}: imports {fault}")


def test_a_module_left_at_the_top_of_the_library_is_in_no_layer(tmp_path):
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "loose.py").write_text("import numpy\n")
    assert layering_faults(tmp_path) == [f"pipeline/loose.py: in no layer of {LAYERS}"]
