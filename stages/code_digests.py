"""Stage `code-digests`: for every `pipeline` command, the digests of the project modules it
runs, in ``data/code/<command>.sha256``; each stage of dvc.yaml depends on its command's file."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.core.atomic import exclusive, write_text
from pipeline.core.code_digests import closure, digest_listing, module_file
from pipeline.core.errors import PipelineError
from pipeline.core.layout import CODE_DIGESTS

log = logging.getLogger("pipeline")


def run(commands: dict[str, str], root: Path = Path()) -> None:
    """Write ``<root>/data/code/<command>.sha256`` for every command of `commands` (name ->
    its stage module, ``stages.fit_head``), listing the modules under `root` (the project's
    ``pipeline/`` and ``stages/``, where DVC runs) that the command runs, with the digest of
    each. PipelineError when `root` holds no project code."""
    cli = module_file("stages.cli", root)
    if cli is None:
        raise PipelineError(
            f"code-digests: {root.resolve()} has no stages/cli.py; run it in the project's root"
        )
    out = root / CODE_DIGESTS
    found: dict[Path, set[Path]] = {}  # each module's imports, parsed once for all commands
    with exclusive(out):
        for command, module in sorted(commands.items()):
            stage_module = module_file(module, root)
            if stage_module is None:
                raise PipelineError(f"code-digests: {root.resolve()} has no module {module}")
            modules = closure({cli, stage_module}, root, found)
            write_text(digest_listing(modules, root), out / f"{command}.sha256")
    log.info("code digests of %d commands in %s", len(commands), out)
