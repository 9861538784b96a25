"""How an `overhop` command fails: one line on stderr, `overhop: <message>`, and an exit
status; never a traceback.

It needs no Python SDK, so `serve` and `config` report their errors the same way as the
commands that talk to a server.
"""

import sys
from typing import NoReturn

import click

ERROR_EXIT = 1  # the server refused, or could not be reached, or a worker stopped on an error
USAGE_EXIT = 2  # bad usage or configuration: the conventional status, as click uses


class CliFailure(Exception):
    """A failure to report as one line, `overhop: <message>`, and an exit status."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def fail(message: str, exit_code: int) -> NoReturn:
    """Print `overhop: <message>` on stderr and exit with `exit_code`."""
    click.echo(f"overhop: {message}", err=True)
    sys.exit(exit_code)
