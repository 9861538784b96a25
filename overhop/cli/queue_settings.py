"""The queue settings as command-line options (`queue add`, `queue set`) and as the
`key  value` rows that show a queue's configuration.

Options ending in `-ms` become timedeltas for the SDK; `queue set` also takes `none` for
the settings that can be cleared.
"""

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import click
from overhop_client import Backoff, QueueConfig

from overhop.cli.render import duration

NONE_WORDS = ("none", "null", "-")


class OptionalInt(click.ParamType[int | None]):
    """An integer within bounds, or `none` (clear the setting)."""

    name = "integer|none"

    def __init__(self, low: int, high: int) -> None:
        self.low = low
        self.high = high

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int | None:
        if value is None or isinstance(value, int):
            return value
        if str(value).lower() in NONE_WORDS:
            return None
        try:
            number = int(str(value))
        except ValueError:
            self.fail(f"{value!r} is not an integer or 'none'", param, ctx)
        if not self.low <= number <= self.high:
            self.fail(f"{number} is not in {self.low}..{self.high}", param, ctx)
        return number


# Queue settings as options: (option, SDK keyword, kind, low, high, help). "ms" options
# become timedeltas; `queue set` also accepts `none` for the settings that can be cleared.
_SETTING_OPTIONS: tuple[tuple[str, str, str, int, int, str], ...] = (
    ("--concurrency", "concurrency_limit", "int", 1, 1_000_000,
     "Most jobs of the queue out at once."),
    ("--group-concurrency", "group_concurrency_limit", "int", 1, 1_000_000,
     "Most jobs of one group (ENQUEUE's group) out at once."),
    ("--rate", "rate_limit", "int", 1, 1_000_000,
     "Most jobs started per rate window."),
    ("--rate-window-ms", "rate_window", "ms", 10, 86_400_000,
     "The rate window (default 1000)."),
    ("--max-attempts", "max_attempts", "int", 1, 1000, "Attempts per job."),
    ("--retry-interval-ms", "retry_interval", "ms", 1, 86_400_000,
     "Base wait before a retry."),
    ("--backoff-max-ms", "backoff_max", "ms", 1, 86_400_000, "Longest wait before a retry."),
    ("--lease-ms", "lease", "ms", 100, 86_400_000, "Lease of a delivered job."),
    ("--keep-completed", "keep_completed", "int", 0, 1_000_000_000,
     "Completed jobs kept (the oldest are removed)."),
    ("--keep-completed-for-ms", "keep_completed_for", "ms", 0, 315_360_000_000,
     "Completed jobs are removed once finished this long ago."),
    ("--keep-failed", "keep_failed", "int", 0, 1_000_000_000,
     "Failed jobs kept (the oldest are removed)."),
    ("--keep-failed-for-ms", "keep_failed_for", "ms", 0, 315_360_000_000,
     "Failed jobs are removed once failed this long ago."),
)
_UNCLEARABLE = frozenset({"rate_window"})


def setting_options(*, clearable: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The queue-setting options; with `clearable`, those that can be cleared take `none`."""
    decorators: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = []
    for option, keyword, _, low, high, help_text in _SETTING_OPTIONS:
        may_clear = clearable and keyword not in _UNCLEARABLE
        kind: click.ParamType[int | None] = (OptionalInt(low, high) if may_clear
                                             else click.IntRange(low, high))
        suffix = " 'none' clears it." if may_clear else ""
        decorators.append(click.option(option, keyword, type=kind, default=None,
                                       help=help_text + suffix))
    decorators += [
        click.option("--backoff", "backoff", default=None,
                     type=click.Choice([kind.value for kind in Backoff]),
                     help="How the wait grows between attempts."),
        click.option("--jitter/--no-jitter", "backoff_jitter", default=None,
                     help="Randomise half of each wait."),
        click.option("--job-overrides/--no-job-overrides", "allow_job_overrides",
                     default=None, help="Whether jobs may set their own attempts, retry "
                                        "interval and lease."),
    ]

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):  # the first listed shows first in --help
            function = decorator(function)
        return function

    return decorate


def settings_from_options(options: dict[str, Any], *, clearing: Sequence[str]
                          ) -> dict[str, Any]:
    """The SDK keywords for the options given. `clearing` lists the keywords given as
    `none` (their value is None); other None values were not given."""
    kinds = {keyword: kind for _, keyword, kind, _, _, _ in _SETTING_OPTIONS}
    settings: dict[str, Any] = {}
    for keyword, value in options.items():
        if value is None and keyword not in clearing:
            continue
        if value is not None and kinds.get(keyword) == "ms":
            value = timedelta(milliseconds=value)
        settings[keyword] = value
    return settings


def given_as_none(ctx: click.Context) -> list[str]:
    """Setting keywords whose option was given on the command line (so None means clear)."""
    return [name for name, value in ctx.params.items()
            if value is None and ctx.get_parameter_source(name)
            == click.core.ParameterSource.COMMANDLINE]


def config_rows(config: QueueConfig) -> list[tuple[str, Any]]:
    """A queue's configuration as `fields` rows."""
    return [
        ("concurrency", config.concurrency_limit),
        ("group concurrency", config.group_concurrency_limit),
        ("rate", None if config.rate_limit is None
         else f"{config.rate_limit} per {duration(config.rate_window)}"),
        ("max attempts", config.max_attempts),
        ("retry interval", config.retry_interval),
        ("backoff", f"{config.backoff.value}"
         + (f", max {duration(config.backoff_max)}" if config.backoff_max else "")
         + (", jitter" if config.backoff_jitter else "")),
        ("lease", config.lease),
        ("job overrides", config.allow_job_overrides),
        ("keep completed", config.keep_completed),
        ("keep completed for", config.keep_completed_for),
        ("keep failed", config.keep_failed),
        ("keep failed for", config.keep_failed_for),
    ]
