"""The `overhop` command line: the click group and its `serve` and `config` commands.

Other modules may add commands to the group object `cli`. Both commands take
`--config FILE` and any number of `--section.key VALUE` overrides (see
docs/configuration.md); a configuration error is printed as one line,
`overhop: <message>`, and the exit status is 2. The server package is imported only
when `serve` runs.
"""

import sys
from typing import NoReturn

import click

from overhop import __version__
from overhop.config.loading import ConfigError, LoadedConfig, dump_config_toml, load_config
from overhop.logs import configure_logging

CONFIG_ERROR_EXIT = 2  # the conventional status for bad usage, as click uses

# Dotted overrides are not click options: let them through to ctx.args.
_OVERRIDES = {"ignore_unknown_options": True, "allow_extra_args": True}
_config_option = click.option(
    "--config", "config_file", metavar="FILE", default=None,
    help="Config file (default: $OVERHOP_CONFIG, ./overhop.toml, ~/.overhop/config.toml, "
         "/etc/overhop/config.toml).")


# Commands that talk to a running server through the Python SDK (`clients/python`). They
# are loaded on first use: `overhop serve` and `overhop config` need only the server.
SDK_COMMANDS = ("queues", "queue", "enqueue", "job", "jobs", "status", "worker")
SDK_MISSING = "needs the Python SDK: pip install ./clients/python (the overhop-client package)"


def _sdk_missing_command(name: str) -> click.Command:
    def report() -> None:
        _fail(f"'overhop {name}' {SDK_MISSING}")

    return click.Command(name, callback=report, help=f"(unavailable: {SDK_MISSING})",
                         context_settings=_OVERRIDES)


class OverhopGroup(click.Group):
    """The `overhop` group, loading the SDK-backed commands when one is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *SDK_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in SDK_COMMANDS and name not in self.commands:
            try:
                from overhop.cli_admin import ADMIN_COMMANDS
                from overhop.cli_worker import worker_command
            except ModuleNotFoundError as exc:
                if not (exc.name or "").startswith("overhop_client"):
                    raise
                return _sdk_missing_command(name)
            for command in (*ADMIN_COMMANDS, worker_command):
                self.add_command(command)
        return super().get_command(ctx, name)


@click.group(cls=OverhopGroup, context_settings={"help_option_names": ["-h", "--help"]},
             invoke_without_command=True)
@click.version_option(__version__, prog_name="overhop", message="%(prog)s %(version)s")
@click.option("--self-debug", is_flag=True,
              help="Start a throwaway server in this process, walk every message type of "
                   "the protocol against it, print every frame; exit 0 if all steps pass.")
@click.option("--self-debug-keep-artifacts", is_flag=True,
              help="With --self-debug: keep its storage directory afterwards.")
@click.pass_context
def cli(ctx: click.Context, self_debug: bool, self_debug_keep_artifacts: bool) -> None:
    """Overhop: a standalone, durable job-queue broker."""
    if self_debug_keep_artifacts and not self_debug:
        _fail("--self-debug-keep-artifacts needs --self-debug")
    if self_debug:
        try:
            from selfdebug.run import run_self_debug  # loads the server: only when asked
        except ModuleNotFoundError as exc:
            if not (exc.name or "").startswith("overhop_client"):
                raise
            _fail(f"--self-debug {SDK_MISSING}")
        sys.exit(run_self_debug(keep_artifacts=self_debug_keep_artifacts))
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


def _load(config_file: str | None, overrides: list[str]) -> LoadedConfig:
    try:
        return load_config(config_file, overrides)
    except ConfigError as exc:
        _fail(str(exc))


def _fail(message: str) -> NoReturn:
    click.echo(f"overhop: {message}", err=True)
    sys.exit(CONFIG_ERROR_EXIT)


@cli.command(context_settings=_OVERRIDES)
@_config_option
@click.pass_context
def serve(ctx: click.Context, config_file: str | None) -> None:
    """Run the broker. Extra --section.key VALUE words override config keys."""
    loaded = _load(config_file, ctx.args)
    configure_logging(loaded.config.logging.level, loaded.config.logging.human_friendly)
    from overhop.server.app import run_server  # the server is heavy; load it only to serve

    sys.exit(run_server(loaded))


@cli.command(context_settings=_OVERRIDES)
@_config_option
@click.pass_context
def config(ctx: click.Context, config_file: str | None) -> None:
    """Print the effective configuration as TOML.

    The first line is a comment naming the file used, or "defaults". Extra
    --section.key VALUE words override config keys.
    """
    loaded = _load(config_file, ctx.args)
    click.echo(f"# source: {loaded.source}")
    click.echo(dump_config_toml(loaded.config), nl=False)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="overhop")
