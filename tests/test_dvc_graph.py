"""dvc.yaml cannot go stale: each stage depends on exactly the project modules its command
imports, and on every parameter its code reads.

Imports are followed transitively with `ast` from the stage's command (``stages/cli.py``, then
its stage module). Parameters are the chains ``params.<block>[.<key>]`` in that code, and the
reads of the `Params` helpers it calls (``params.layout`` reads ``dataset.name``, ...).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from pipeline.core.params import Params
from stages.cli import STAGE_MODULES

REPO = Path(__file__).resolve().parents[1]
DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
PROJECT_PACKAGES = ("pipeline", "stages")
# Parameters that a stage reads but that cannot change its outputs, so that depending on them
# would only re-run stages for nothing:
NEVER_CHANGE_OUTPUTS = {
    "jobs",  # worker processes: outputs are byte-identical for any number (tested)
    "cluster",  # where they run: a Dask cluster gives the bytes of a local run (tested)
    # how descriptors are computed, not which: shards already in the cache are kept by their
    # digest whatever the device, batch size or loader workers of a later run
    "features.device",
    "features.batch_size",
    "features.workers",
    # which cuts the evaluation patches: pil and torch agree within one grey level (tested)
    "features.cutting",
}


def module_file(name: str) -> Path | None:
    """The file of a project module (``pipeline.data.voc`` -> ``pipeline/data/voc.py``), or None."""
    if name.split(".")[0] not in PROJECT_PACKAGES:
        return None
    path = REPO / Path(*name.split("."))
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def imported_modules(path: Path) -> set[str]:
    """Project modules imported anywhere in a file (top level or inside functions)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if module_file(n) is not None}


def discovered_modules(path: Path) -> set[Path]:
    """The modules a file imports by discovery (``pkgutil.iter_modules``, as the backbone
    registry finds its families): every module of its own folder."""
    if "iter_modules(" not in path.read_text():
        return set()
    return {p for p in path.parent.glob("*.py") if p.name != "__init__.py"}


def closure(files: set[Path]) -> set[Path]:
    """`files` and every project module they import, transitively (discovered ones too)."""
    seen: set[Path] = set()
    todo = list(files)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(module_file(name) for name in imported_modules(path))
        todo.extend(discovered_modules(path))
    return seen


def params_chains(path: Path, root_name: str) -> set[tuple[str, ...]]:
    """Every attribute chain read from the name `root_name` in a file, e.g. ``("tiling",
    "patch_size")`` for ``params.tiling.patch_size``."""
    return params_chains_in(ast.parse(path.read_text()), root_name)


def keys_of(chain: tuple[str, ...]) -> set[str]:
    """The params keys a chain reads: ``block.key``, a whole block, a top-level scalar, or
    those a `Params` helper reads."""
    first = chain[0]
    if first in HELPER_READS:
        return HELPER_READS[first]
    if first not in Params.model_fields:
        return set()
    block = Params.model_fields[first].annotation
    fields = getattr(block, "model_fields", {})
    return {f"{first}.{chain[1]}"} if len(chain) > 1 and chain[1] in fields else {first}


def helper_reads() -> dict[str, set[str]]:
    """What each method or property of `Params` reads from ``self``."""
    tree = ast.parse((REPO / "pipeline/core/params.py").read_text())
    (params_class,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Params"]
    reads: dict[str, set[str]] = {}
    for function in params_class.body:
        if isinstance(function, ast.FunctionDef):
            module = ast.Module(body=function.body, type_ignores=[])
            chains = params_chains_in(module, "self")
            reads[function.name] = {f"{c[0]}.{c[1]}" if len(c) > 1 else c[0] for c in chains}
    return reads


def params_chains_in(tree: ast.AST, root_name: str) -> set[tuple[str, ...]]:
    """`params_chains` of a parsed tree; only the longest chains are kept (``params.a.b``
    also walks ``params.a``)."""
    chains = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            parts, inner = [], node
            while isinstance(inner, ast.Attribute):
                parts.append(inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id == root_name:
                chains.add(tuple(reversed(parts)))
    return {c for c in chains if not any(len(o) > len(c) and o[: len(c)] == c for o in chains)}


HELPER_READS = helper_reads()


def stage_spec(stage: dict) -> dict:
    """The body of a stage: its `do` for foreach stages, else itself."""
    return stage.get("do", stage)


def command_files(stage: dict) -> set[Path]:
    """The project modules the stage's command runs: the CLI and its stage module."""
    command = stage_spec(stage)["cmd"].split()
    assert command[0] == "pipeline", command
    name = command[1]
    if "--variant" in command:  # fit-action: one stage module per variant
        name = f"{name}-{command[command.index('--variant') + 1]}"
    return {module_file("stages.cli"), module_file(STAGE_MODULES[name])}


def code_deps(stage: dict) -> set[Path]:
    """The project modules a stage declares: its ``.py`` deps, and every module of a folder it
    declares whole (the backbone registry's, whose families are found, not imported by name)."""
    declared = set()
    for dep in map(str, stage_spec(stage).get("deps", [])):
        if dep.endswith(".py"):
            declared.add(REPO / dep)
        elif dep.startswith(PROJECT_PACKAGES) and (REPO / dep).is_dir():
            declared.update(p for p in (REPO / dep).glob("*.py") if p.name != "__init__.py")
    return declared


def interpolated(stage: dict) -> list[str]:
    """The params a stage's definition interpolates (``${dataset.root}`` in a dep, a foreach
    list): DVC re-runs the stage when they change, since its paths or instances change."""
    text = yaml.safe_dump(stage)
    return [k for k in re.findall(r"\$\{([^}]+)\}", text) if not k.startswith("item")]


def covered(key: str, declared: list[str]) -> bool:
    return any(key == d or key.startswith(f"{d}.") for d in declared)


@pytest.mark.parametrize("name", sorted(DVC_YAML))
def test_stage_depends_on_exactly_the_modules_its_command_imports(name):
    stage = DVC_YAML[name]
    imported = {p for p in closure(command_files(stage)) if p.name != "__init__.py"}
    declared = code_deps(stage)
    missing = sorted(str(p.relative_to(REPO)) for p in imported - declared)
    extra = sorted(str(p.relative_to(REPO)) for p in declared - imported)
    assert not missing, f"{name}: imported but not in deps: {missing}"
    assert not extra, f"{name}: in deps but never imported: {extra}"


@pytest.mark.parametrize("name", sorted(DVC_YAML))
def test_stage_lists_each_dependency_once(name):
    deps = [str(d) for d in stage_spec(DVC_YAML[name]).get("deps", [])]
    assert sorted({d for d in deps if deps.count(d) > 1}) == []


@pytest.mark.parametrize("name", sorted(DVC_YAML))
def test_stage_declares_every_parameter_its_code_reads(name):
    stage = DVC_YAML[name]
    files = closure(command_files(stage)) - {REPO / "pipeline/core/params.py"}
    reads = set().union(*(keys_of(c) for f in files for c in params_chains(f, "params")))
    declared = [str(p) for p in stage_spec(stage).get("params", [])] + interpolated(stage)
    missing = sorted(k for k in reads if not covered(k, [*NEVER_CHANGE_OUTPUTS, *declared]))
    assert not missing, f"{name}: reads params not in its `params`: {missing}"


def test_package_inits_hold_no_code_so_leaving_them_out_of_deps_is_safe():
    inits = [init for package in PROJECT_PACKAGES for init in (REPO / package).rglob("__init__.py")]
    assert len(inits) > len(PROJECT_PACKAGES)  # the library's subpackages are walked too
    for init in inits:
        body = ast.parse(init.read_text()).body
        assert all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def test_a_module_that_discovers_its_package_depends_on_every_module_of_it(tmp_path):
    (tmp_path / "finder.py").write_text("import pkgutil\nfound = pkgutil.iter_modules(x)\n")
    (tmp_path / "family.py").write_text("NETS = ()\n")
    (tmp_path / "__init__.py").write_text("")
    assert discovered_modules(tmp_path / "finder.py") == {
        tmp_path / "finder.py",
        tmp_path / "family.py",
    }
    assert discovered_modules(tmp_path / "family.py") == set()
