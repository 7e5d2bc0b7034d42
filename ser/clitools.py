"""What the three console scripts share: -h/--help, version option, examples, one-line errors."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from ser import __version__
from ser.errors import SerError

version_option = click.version_option(__version__, prog_name="ser")
# Given to each group: its subcommands inherit it, so every command takes -h as well as --help.
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}


def examples(*command_lines: str) -> str:
    """A help epilog listing example command lines, kept as written (click does not rewrap it)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in command_lines)


class UserError(click.ClickException):
    """A one-line error about input, model or output: exit status 2, like click's usage errors."""

    exit_code = 2


def one_line_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a :class:`SerError` into ``Error: <message>`` and exit status 2, with no traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except SerError as error:
            raise UserError(str(error)) from None

    return wrapper
