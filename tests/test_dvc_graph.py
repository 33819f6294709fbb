"""dvc.yaml cannot go stale: each stage depends on the digests of the project modules its
command runs (``data/code/<command>.sha256``, which change exactly when one of those modules
does), and on every parameter its code reads.

Parameters are the chains ``params.<block>[.<key>]`` in the command's code (its modules as
`pipeline.core.code_digests` finds them), and the reads of the `Params` helpers it calls
(``params.layout`` reads ``dataset.name``, ...).
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.core.code_digests import PROJECT_PACKAGES, closure, discovered_modules, module_file
from pipeline.core.params import Params
from stages.cli import STAGE_MODULES
from tests.cli import run_cli

REPO = Path(__file__).resolve().parents[1]
DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
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


def command_name(stage: dict) -> str:
    """The `pipeline` command a stage runs (``fit-action-<variant>`` for fit-action)."""
    command = stage_spec(stage)["cmd"].split()
    assert command[0] == "pipeline", command
    name = command[1]
    if "--variant" in command:  # fit-action: one stage module per variant
        name = f"{name}-{command[command.index('--variant') + 1]}"
    return name


def command_files(stage: dict) -> set[Path]:
    """The project modules the stage's command runs: the CLI and its stage module."""
    module = STAGE_MODULES[command_name(stage)]
    return {module_file("stages.cli", REPO), module_file(module, REPO)}


def interpolated(stage: dict) -> list[str]:
    """The params a stage's definition interpolates (``${dataset.root}`` in a dep, a foreach
    list): DVC re-runs the stage when they change, since its paths or instances change."""
    text = yaml.safe_dump(stage)
    return [k for k in re.findall(r"\$\{([^}]+)\}", text) if not k.startswith("item")]


def covered(key: str, declared: list[str]) -> bool:
    return any(key == d or key.startswith(f"{d}.") for d in declared)


@pytest.mark.parametrize("name", sorted(DVC_YAML))
def test_stage_depends_on_the_code_digests_of_its_command_and_on_no_module_by_name(name):
    deps = [str(d) for d in stage_spec(DVC_YAML[name]).get("deps", [])]
    code = [d for d in deps if d.startswith((*PROJECT_PACKAGES, "data/code"))]
    if name == "code-digests":
        assert code == list(PROJECT_PACKAGES)  # every module: any edit re-runs it
    else:
        assert code == [f"data/code/{command_name(DVC_YAML[name])}.sha256"]


def test_every_command_has_code_digests_listing_exactly_the_modules_it_runs(tmp_path, monkeypatch):
    for package in PROJECT_PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package)
    monkeypatch.chdir(tmp_path)
    run_cli("code-digests")
    for command, module in STAGE_MODULES.items():
        listing = (tmp_path / f"data/code/{command}.sha256").read_text().splitlines()
        runs = closure({REPO / "stages/cli.py", module_file(module, REPO)}, REPO)
        assert [line.split("  ")[1] for line in listing] == sorted(
            str(p.relative_to(REPO)) for p in runs
        )
    assert "pipeline/features/nets/tiny.py" in (tmp_path / "data/code/features.sha256").read_text()


def test_editing_a_module_changes_the_digests_of_exactly_the_commands_that_run_it(
    tmp_path, monkeypatch
):
    for package in PROJECT_PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package)
    monkeypatch.chdir(tmp_path)
    digests = tmp_path / "data/code"

    def listings() -> dict[str, str]:
        run_cli("code-digests")
        return {p.stem: p.read_text() for p in digests.glob("*.sha256")}

    before = listings()
    with (tmp_path / "pipeline/scoring/map_pictures.py").open("a") as f:
        f.write("# an edit\n")
    after = listings()
    assert {c for c in before if before[c] != after[c]} == {"heatmaps", "compare", "action-maps"}
    with (tmp_path / "pipeline/features/nets/tiny.py").open("a") as f:
        f.write("# an edit\n")  # found by the registry's discovery, never imported by name
    changed = {c for c, text in listings().items() if text != after[c]}
    assert {"features", "dense", "action-features"} <= changed
    assert not changed & {"demo", "index", "tile", "sample", "fit-head", "evaluate"}


@pytest.mark.parametrize("name", sorted(DVC_YAML))
def test_stage_lists_each_dependency_once(name):
    deps = [str(d) for d in stage_spec(DVC_YAML[name]).get("deps", [])]
    assert sorted({d for d in deps if deps.count(d) > 1}) == []


@pytest.mark.parametrize("name", sorted(DVC_YAML))
def test_stage_declares_every_parameter_its_code_reads(name):
    stage = DVC_YAML[name]
    files = closure(command_files(stage), REPO) - {REPO / "pipeline/core/params.py"}
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


def test_code_digests_outside_a_project_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    done = run_cli("code-digests", check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: code-digests: {tmp_path} has no stages/cli.py; run it in the project's root"
    ]
    assert not (tmp_path / "data").exists()
