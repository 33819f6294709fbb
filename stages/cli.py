"""The `pipeline` command: every stage as a click subcommand.

Stage modules are imported only when their command runs, so that light stages (index, tile)
start without loading torch.
"""

from __future__ import annotations

import importlib
import sys

import click

from pipeline.errors import PipelineError

COMMANDS: dict[str, str] = {
    "demo": "stages.demo:demo",
    "index": "stages.index:index",
    "tile": "stages.tile:tile",
    "sample": "stages.sample:sample",
    "features": "stages.features:features",
    "fit-head": "stages.fit_head:fit_head",
    "evaluate": "stages.evaluate:evaluate",
    "heatmaps": "stages.heatmaps:heatmaps",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported from ``module:attribute`` on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attribute = COMMANDS[cmd_name].split(":")
        return getattr(importlib.import_module(module), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """voc-transfer: Pascal VOC patches and transferred CNN features (Oquab et al. 2014)."""


def main() -> None:
    """Run the CLI; a PipelineError is printed as one line on stderr with exit status 1."""
    try:
        cli.main(standalone_mode=False)
    except PipelineError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
