"""`overhop worker MODULE:ATTRIBUTE`: run a worker defined in the user's code; and the
`worker` group that also holds the admin's `quiet`, `stop` and `concurrency` commands.

The words `run`, `quiet`, `stop` and `concurrency` are recognized first; any other first
argument is a target to run (`overhop worker tasks:app` is `overhop worker run tasks:app`;
a module named like one of the words is run with `run`).

The module is imported with the current directory first on `sys.path`; ATTRIBUTE (dotted
for nested objects) names an `overhop_client.Worker`, or a function that returns one when
called without arguments. `--url` (or `$OVERHOP_URL`) replaces the worker's own address.
The worker runs until SIGINT or SIGTERM and stops gracefully (a second signal hurries it):
exit 0. A target that cannot be loaded is one line on stderr and exit 2; a worker that
stops on a server error (a queue that does not exist, say) is one line and exit 1.
"""

import importlib
import logging
import os
import sys
import traceback

import click
from overhop_client import OverhopError, Worker
from overhop_client.addresses import parse_brokers

from overhop.cli.exits import ERROR_EXIT, USAGE_EXIT, fail
from overhop.cli.session import URL_ENV
from overhop.cli.worker_control import concurrency_command, quiet_command, stop_command

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
LOG_LEVELS = ("debug", "info", "warning", "error")


class WorkerLoadError(Exception):
    """The target does not name a Worker that can be loaded; str() is one line."""


def _describe(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    described = f"{type(error).__name__}: {text}" if text else type(error).__name__
    if isinstance(error, SyntaxError):
        return described  # its text names the file and line already
    return f"{described}{_where(error)}"


def _where(error: BaseException) -> str:
    """` (FILE, line N)` of the innermost frame of the user's code that raised, if any."""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if not frame.filename.startswith("<") and "importlib" not in frame.filename]
    if not frames or frames[-1].filename == __file__:
        return ""
    path = frames[-1].filename
    relative = os.path.relpath(path) if path.startswith(os.getcwd() + os.sep) else path
    return f" ({relative}, line {frames[-1].lineno})"


def load_worker(target: str) -> Worker:
    """The Worker that `module:attribute` names (calling it if it is a factory)."""
    module_name, colon, attribute = target.partition(":")
    if not colon or not module_name or not attribute or ":" in attribute:
        raise WorkerLoadError(f"{target!r} is not MODULE:ATTRIBUTE (e.g. tasks:app)")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        found: object = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise WorkerLoadError(f"no module named {exc.name!r}") from None
        raise WorkerLoadError(f"importing {module_name!r} failed: {_describe(exc)}") from None
    except Exception as exc:  # the user's module raised while being imported
        raise WorkerLoadError(f"importing {module_name!r} failed: {_describe(exc)}") from None
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise WorkerLoadError(f"{module_name!r} has no attribute {attribute!r}") from None
    if isinstance(found, Worker):
        return found
    if not callable(found):
        raise WorkerLoadError(f"{target} is a {type(found).__name__}, not an "
                              "overhop_client.Worker or a function returning one")
    try:
        made = found()
    except Exception as exc:
        raise WorkerLoadError(f"{target}() failed: {_describe(exc)}") from None
    if not isinstance(made, Worker):
        raise WorkerLoadError(f"{target}() returned a {type(made).__name__}, not an "
                              "overhop_client.Worker")
    return made


class WorkerGroup(click.Group):
    """`overhop worker`: its subcommands, and `run` when the first word is none of them."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.command("run")
@click.argument("target", metavar="MODULE:ATTRIBUTE")
@click.option("--url", default=None, envvar=URL_ENV, metavar="HOST:PORT",
              help=f"Server address, or a cluster's brokers comma-separated, replacing "
                   f"the worker's own (or ${URL_ENV}).")
@click.option("--concurrency", type=click.IntRange(1), default=None, metavar="N",
              help="Jobs each queue runs at once, replacing the worker's own values.")
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="info",
              show_default=True, help="debug shows a failed job's traceback.")
def run_command(target: str, url: str | None, concurrency: int | None,
                log_level: str) -> None:
    """Run the overhop_client Worker at MODULE:ATTRIBUTE until SIGINT or SIGTERM."""
    try:
        app = load_worker(target)
    except WorkerLoadError as exc:
        fail(str(exc), USAGE_EXIT)
    if url is not None:
        try:
            parse_brokers(url)
        except ValueError as exc:
            fail(str(exc), USAGE_EXIT)
        app.url = url
    if concurrency is not None:
        app.set_concurrency(concurrency)
    logging.basicConfig(level=log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    try:
        app.run()
    except OverhopError as exc:
        fail(f"{exc.code}: {exc.message}", ERROR_EXIT)
    except RuntimeError as exc:  # no handlers registered, already running
        fail(str(exc), ERROR_EXIT)


worker_command = WorkerGroup("worker", commands=[
    run_command, quiet_command, stop_command, concurrency_command],
    help="Run a worker (`overhop worker MODULE:ATTRIBUTE`), or control running ones.")
