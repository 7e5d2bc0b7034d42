"""``python -m ser``: the three commands under one name (``python -m ser batch score ...``)."""

from __future__ import annotations

import importlib

import click

from ser.clitools import CONTEXT_SETTINGS, examples, version_option

# name -> the module whose ``main`` it runs; each is also its own console script (ser-NAME).
COMMANDS = {"train": "ser.training.cli", "export": "ser.export.cli", "batch": "ser.batch.cli"}


class _LazyCommands(click.Group):
    """Imports a command's module only when it runs: ``batch`` never loads training code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        return importlib.import_module(module).main if module else None


@click.group(
    cls=_LazyCommands,
    context_settings=CONTEXT_SETTINGS,
    epilog=examples(
        "python -m ser batch score ./audio -o report.csv     # = ser-batch score ...",
        "python -m ser train forest --data corpus.csv --out runs/forest",
        "python -m ser export forest --model runs/forest -o forest.onnx",
    ),
)
@version_option
def main() -> None:
    """ser: speech emotion recognition. The same commands as ser-train, ser-export, ser-batch."""


if __name__ == "__main__":
    main(prog_name="python -m ser")
