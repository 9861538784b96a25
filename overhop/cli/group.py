"""The `overhop` click group, its `serve` and `config` commands, and `--self-debug`.

Other modules may add commands to the group object `cli`. Both commands take
`--config FILE` and any number of `--section.key VALUE` overrides (see
docs/configuration.md); a configuration error is printed as one line,
`overhop: <message>`, and the exit status is 2. The server package is imported only
when `serve` runs.

The commands that talk to a server use the Python SDK (`clients/python`) and are loaded
on first use: without the SDK each of them prints one line and exits 2.
"""

import sys

import click

from overhop import __version__
from overhop.cli.exits import USAGE_EXIT, fail
from overhop.config.loading import ConfigError, LoadedConfig, dump_config_toml, load_config
from overhop.logs import configure_logging

# Dotted overrides are not click options: let them through to ctx.args.
_OVERRIDES = {"ignore_unknown_options": True, "allow_extra_args": True}
_config_option = click.option(
    "--config", "config_file", metavar="FILE", default=None,
    help="Config file (default: $OVERHOP_CONFIG, ./overhop.toml, ~/.overhop/config.toml, "
         "/etc/overhop/config.toml).")


# Commands that talk to a running server through the Python SDK (`clients/python`). They
# are loaded on first use: `overhop serve` and `overhop config` need only the server.
SDK_COMMANDS = ("queues", "queue", "enqueue", "job", "jobs", "status", "worker", "users",
                "schedule", "cancel", "bulk")
SDK_MISSING = "needs the Python SDK: pip install ./clients/python (the overhop-client package)"


def _sdk_commands() -> tuple[click.Command, ...]:
    """The commands named in SDK_COMMANDS; ModuleNotFoundError without the SDK."""
    from overhop.cli.bulk import bulk_command, cancel_command
    from overhop.cli.enqueue import enqueue_command
    from overhop.cli.jobs import job_group, jobs_command
    from overhop.cli.queues import queue_group, queues_command
    from overhop.cli.schedules import schedule_group
    from overhop.cli.status import status_command
    from overhop.cli.users import users_group
    from overhop.cli.worker import worker_command

    return (queues_command, queue_group, enqueue_command, job_group, jobs_command,
            status_command, worker_command, users_group, schedule_group, cancel_command,
            bulk_command)


def _sdk_missing_command(name: str) -> click.Command:
    def report() -> None:
        fail(f"'overhop {name}' {SDK_MISSING}", USAGE_EXIT)

    return click.Command(name, callback=report, help=f"(unavailable: {SDK_MISSING})",
                         context_settings=_OVERRIDES)


class OverhopGroup(click.Group):
    """The `overhop` group, loading the SDK-backed commands when one is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *SDK_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in SDK_COMMANDS and name not in self.commands:
            try:
                commands = _sdk_commands()
            except ModuleNotFoundError as exc:
                if not (exc.name or "").startswith("overhop_client"):
                    raise
                return _sdk_missing_command(name)
            for command in commands:
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
        fail("--self-debug-keep-artifacts needs --self-debug", USAGE_EXIT)
    if self_debug:
        _run_self_debug(self_debug_keep_artifacts, None, [])
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@click.command(context_settings=_OVERRIDES)
@click.option("--self-debug", is_flag=True, required=True)
@click.option("--self-debug-keep-artifacts", is_flag=True)
@_config_option
@click.pass_context
def self_debug_command(ctx: click.Context, self_debug: bool, self_debug_keep_artifacts: bool,
                       config_file: str | None) -> None:
    """`overhop --self-debug` with serve's --config FILE and --section.key VALUE words."""
    _run_self_debug(self_debug_keep_artifacts, config_file, ctx.args)


def _run_self_debug(keep_artifacts: bool, config_file: str | None,
                    overrides: list[str]) -> None:
    try:
        from selfdebug.run import run_self_debug  # loads the server: only when asked
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("overhop_client"):
            raise
        fail(f"--self-debug {SDK_MISSING}", USAGE_EXIT)
    sys.exit(run_self_debug(keep_artifacts=keep_artifacts, config_file=config_file,
                            overrides=overrides))


def _load(config_file: str | None, overrides: list[str]) -> LoadedConfig:
    try:
        return load_config(config_file, overrides)
    except ConfigError as exc:
        fail(str(exc), USAGE_EXIT)


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
    args = sys.argv[1:]
    if args and args[0] in ("--self-debug", "--self-debug-keep-artifacts"):
        # A mode of the whole program that takes serve's overrides, which a click group
        # would read as a command name: it gets a command of its own.
        self_debug_command(args=args, prog_name="overhop")
    cli(prog_name="overhop")
