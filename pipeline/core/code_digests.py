"""Which project modules a `pipeline` command runs, and their digests, so that DVC re-runs
exactly the stages whose code changed.

A stage's code is its command's module and every project module that module imports, at the
top or inside a function, transitively; a module that discovers the modules of its folder
(``pkgutil.iter_modules``, as the backbone registry finds its families) runs all of them. Each
stage depends on one file that lists the digests of those modules instead of on every module
by name: DVC rewrites its lock file after every stage, and with one entry per module that file
made each stage's bookkeeping three times slower.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from pathlib import Path

PROJECT_PACKAGES = ("pipeline", "stages")


def module_file(name: str, root: Path) -> Path | None:
    """The file under `root` of a project module (``pipeline.data.voc`` ->
    ``root/pipeline/data/voc.py``), or None for a package, another library or a name that is
    not a module (``pipeline.data.voc.read_image_set``)."""
    if name.split(".")[0] not in PROJECT_PACKAGES:
        return None
    path = (root / Path(*name.split("."))).with_suffix(".py")
    return path if path.is_file() else None


def imported_modules(path: Path, root: Path) -> set[Path]:
    """The files of the project modules that the file `path` imports anywhere (top level or
    inside functions; ``from a import b`` counts `a.b` when it is a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {file for name in names if (file := module_file(name, root)) is not None}


def discovered_modules(path: Path) -> set[Path]:
    """The modules that the file `path` imports by discovery (``pkgutil.iter_modules``): every
    module of its own folder, itself included; none for a file that discovers nothing."""
    if "iter_modules(" not in path.read_text():
        return set()
    return {p for p in path.parent.glob("*.py") if p.name != "__init__.py"}


def closure(
    files: Iterable[Path], root: Path, found: dict[Path, set[Path]] | None = None
) -> set[Path]:
    """`files` and every project module under `root` they import, transitively (discovered
    ones too). Package ``__init__.py`` files hold no code and are left out. `found` keeps
    what each file imports between calls, so that the closures of many commands parse each
    module once (pass the same dict only while no file changes)."""
    found = {} if found is None else found
    seen: set[Path] = set()
    todo = list(files)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if path not in found:
            found[path] = imported_modules(path, root) | discovered_modules(path)
        todo.extend(found[path])
    return seen


def digest_listing(files: Iterable[Path], root: Path) -> str:
    """One line per file, sorted by path: ``<sha256 of its bytes>  <path relative to root>``
    (the format of ``sha256sum``)."""
    named = sorted((path.relative_to(root).as_posix(), path) for path in files)
    return "".join(
        f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {name}\n" for name, path in named
    )
