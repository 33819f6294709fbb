"""How many stages a no-op edit of each project module makes stale, as `dvc status` reports.

Run in a project whose pipeline is up to date (after `dvc repro`, `dvc status` clean). For
every module of `pipeline/` and `stages/`, it appends a comment line, rewrites the code digests
(`pipeline code-digests`, what `dvc repro` runs first), asks `dvc status --json` which stages
changed, and restores the file and the digests byte for byte; it prints one row per module (the
number of stale stage instances besides `code-digests` and, with --names, which) and the sum.
Each stage of `dvc.yaml` depends on the digests of exactly the modules its command runs
(tests/test_dvc_graph.py), so the table says what the import graph costs a user who edits a
module. Run on demand:

    python benchmarks/stale_stages.py [--names] [--modules pipeline/features/nets/registry.py ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path


def stale_stages() -> list[str]:
    """The stage instances `dvc status` reports as changed, sorted."""
    out = subprocess.run(
        ["dvc", "status", "--json"], check=True, capture_output=True, text=True
    ).stdout
    return sorted(json.loads(out or "{}"))


def write_code_digests() -> None:
    """Rewrite data/code/ from the modules as they are now."""
    subprocess.run(["pipeline", "code-digests"], check=True, capture_output=True)


def stale_after_edit(module: Path) -> list[str]:
    """The stages that a comment line appended to `module` makes stale, `code-digests` itself
    left out (the file and the digests restored)."""
    original = module.read_bytes()
    try:
        module.write_bytes(original + b"# a no-op edit\n")
        write_code_digests()
        return [stage for stage in stale_stages() if stage != "code-digests"]
    finally:
        module.write_bytes(original)
        write_code_digests()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", action="store_true", help="List the stale stages too.")
    parser.add_argument("--modules", nargs="*", type=Path, help="Only these files.")
    args = parser.parse_args()
    already = stale_stages()
    if already:
        raise SystemExit(f"dvc status is not clean ({', '.join(already)}): run `dvc repro` first")
    modules = args.modules or sorted(
        p for p in [*Path("pipeline").rglob("*.py"), *Path("stages").glob("*.py")]
        if p.name != "__init__.py"
    )  # fmt: skip
    total = 0
    print("| module | stale stages |")
    print("| --- | ---: |")
    for module in modules:
        stale = stale_after_edit(module)
        total += len(stale)
        names = f" ({', '.join(stale)})" if args.names else ""
        print(f"| `{module}` | {len(stale)}{names} |", flush=True)
    print(f"| sum over {len(modules)} modules | {total} |")


if __name__ == "__main__":
    main()
