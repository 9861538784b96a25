"""Admin commands of `overhop`: queues, jobs and the server's status, over the wire.

Each command opens one connection to a running server with the Python SDK
(`overhop_client`), does its work and closes it. Every command takes `--url` (default
`127.0.0.1:9876`, or `$OVERHOP_URL`) and `--json`. Human output is aligned tables; with
`--json` a read prints the server's reply as the protocol defines it (binary values as
`{"$bin": "<hex>"}`, the convention of the protocol's test vectors) and a write prints a
small object saying what it did.

Failures are one line on stderr, never a traceback: a server ERR is
`overhop: <CODE>: <message>` (exit 1); a server that cannot be reached or drops the
connection, exit 1; bad input (a payload that is not JSON, a bad time or address), exit 2.

    overhop queues
    overhop queue add|set|pause|resume|clear|rm|obliterate|stats NAME ...
    overhop enqueue QUEUE [PAYLOAD_JSON] [--delay-ms MS | --at RFC3339] [--max-attempts N]
    overhop job JID | overhop job retry JID | overhop job rm JID
    overhop jobs QUEUE --status STATUS [--page N | --after JID] [--page-size N]
    overhop status
"""

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, NoReturn, TypeVar

import click
from overhop_client import (
    AsyncClient,
    Backoff,
    ConnectionLost,
    Job,
    JobPage,
    JobStatus,
    MessageType,
    OverhopError,
    QueueConfig,
    QueueStats,
    ServerStatus,
)
from overhop_client.client import DEFAULT_URL
from overhop_client.codec import check_value
from overhop_client.connection import parse_address
from overhop_client.times import format_time

T = TypeVar("T")

URL_ENV = "OVERHOP_URL"
CLIENT_NAME = "overhop-cli"
ERROR_EXIT = 1
USAGE_EXIT = 2
# A local server answers in milliseconds; these bound a hung one, not a slow network.
CONNECT_TIMEOUT_S = 5.0
CALL_TIMEOUT_S = 60.0
NONE_WORDS = ("none", "null", "-")


class CliFailure(Exception):
    """A failure to report as one line, `overhop: <message>`, and an exit status."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def fail(message: str, exit_code: int) -> NoReturn:
    click.echo(f"overhop: {message}", err=True)
    sys.exit(exit_code)


# -- talking to the server -------------------------------------------------------------


def call(url: str, action: Callable[[AsyncClient], Awaitable[T]]) -> T:
    """Connect to `url`, run `action` with the client, close; its result. Every failure
    ends the process with one line (see the module documentation)."""
    try:
        parse_address(url)
    except ValueError as exc:
        fail(str(exc), USAGE_EXIT)
    try:
        return asyncio.run(_session(url, action))
    except CliFailure as exc:
        fail(exc.message, exc.exit_code)
    except OverhopError as exc:
        fail(f"{exc.code}: {exc.message}", ERROR_EXIT)
    except ConnectionLost as exc:
        fail(f"the connection to {url} was lost: {exc}", ERROR_EXIT)
    except TimeoutError:
        fail(f"{url} did not answer within {CALL_TIMEOUT_S:g} s", ERROR_EXIT)
    except Exception as exc:  # a bug must still not print a traceback at an operator
        fail(f"unexpected error: {exc!r}", ERROR_EXIT)


async def _session(url: str, action: Callable[[AsyncClient], Awaitable[T]]) -> T:
    try:
        client = await AsyncClient.connect(url, name=CLIENT_NAME, timeout=CONNECT_TIMEOUT_S)
    except TimeoutError:
        raise CliFailure(f"cannot connect to {url}: no answer within "
                         f"{CONNECT_TIMEOUT_S:g} s", ERROR_EXIT) from None
    except ConnectionRefusedError:
        raise CliFailure(f"cannot connect to {url}: connection refused (is the server "
                         "running?)", ERROR_EXIT) from None
    except OSError as exc:  # unreachable, unknown host, dropped during HELLO
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise CliFailure(f"cannot connect to {url}: {reason}", ERROR_EXIT) from None
    async with client:
        async with asyncio.timeout(CALL_TIMEOUT_S):
            return await action(client)


# -- output ------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return {"$bin": bytes(value).hex()}
    raise TypeError(f"{type(value).__name__} is not JSON")


def to_json(value: Any, *, indent: int | None = 2) -> str:
    return json.dumps(value, indent=indent, default=_json_default, ensure_ascii=False)


def emit_json(value: Any) -> None:
    click.echo(to_json(value))


def cell(value: Any) -> str:
    """A value as a table shows it: '-' for None, times in RFC 3339, JSON for data."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, timedelta):
        return duration(value)
    if isinstance(value, str | int | float):
        return str(value)
    return to_json(value, indent=None)


def duration(value: timedelta) -> str:
    """A duration in the largest whole unit: `250ms`, `2s`, `5m`, `1h`."""
    ms = round(value / timedelta(milliseconds=1))
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Aligned columns, a header line first; numbers right-aligned, the rest left."""
    cells = [[cell(value) for value in row] for row in rows]
    widths = [max([len(header)] + [len(row[i]) for row in cells])
              for i, header in enumerate(headers)]
    numeric = [any(_is_number(row[i]) for row in rows)
               and all(_is_number(row[i]) or row[i] is None for row in rows)
               for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [value.rjust(width) if right else value.ljust(width)
                 for value, width, right in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(row) for row in cells)])


def fields(pairs: Sequence[tuple[str, Any]]) -> str:
    """`key  value` lines with the values aligned."""
    width = max(len(key) for key, _ in pairs)
    return "\n".join(f"{key.ljust(width)}  {cell(value)}" for key, value in pairs)


# -- options -------------------------------------------------------------------------------


class OptionalInt(click.ParamType):
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


def url_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--url", default=DEFAULT_URL, envvar=URL_ENV, show_default=True, metavar="HOST:PORT",
        help=f"Server address (or ${URL_ENV}).")(function)


def json_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print JSON (the server's reply) instead of a table.")(function)


def common(function: Callable[..., Any]) -> Callable[..., Any]:
    return url_option(json_option(function))


# Queue settings as options: (option, SDK keyword, kind, low, high). "ms" options become
# timedeltas; `queue set` also accepts `none` for the settings that can be cleared.
_SETTING_OPTIONS: tuple[tuple[str, str, str, int, int, str], ...] = (
    ("--concurrency", "concurrency_limit", "int", 1, 1_000_000,
     "Most jobs of the queue out at once."),
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
        kind: click.ParamType = (OptionalInt(low, high) if may_clear
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


def _given_as_none(ctx: click.Context) -> list[str]:
    """Setting keywords whose option was given on the command line (so None means clear)."""
    return [name for name, value in ctx.params.items()
            if value is None and ctx.get_parameter_source(name)
            == click.core.ParameterSource.COMMANDLINE]


def _config_rows(config: QueueConfig) -> list[tuple[str, Any]]:
    return [
        ("concurrency", config.concurrency_limit),
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


# -- overhop queues -------------------------------------------------------------------------


@click.command("queues")
@common
def queues_command(url: str, as_json: bool) -> None:
    """List the queues with their job counts."""
    raw = call(url, lambda client: client.request(MessageType.STATUS))
    if as_json:
        emit_json({"queues": raw.get("queues") or []})
        return
    status = ServerStatus.from_wire(raw)
    rows = []
    for queue in sorted(status.queues, key=lambda q: q.info.name):
        counts = queue.counts
        numbers = [None] * 6 if counts is None else [
            counts.new, counts.waiting, counts.delayed, counts.active, counts.completed,
            counts.failed]
        rows.append([queue.info.name, queue.info.state.value, *numbers,
                     queue.subscriptions, queue.info.config.concurrency_limit])
    click.echo(table(["NAME", "STATE", "NEW", "WAITING", "DELAYED", "ACTIVE", "COMPLETED",
                      "FAILED", "SUBSCRIPTIONS", "CONCURRENCY"], rows))


# -- overhop queue ... ------------------------------------------------------------------


@click.group("queue")
def queue_group() -> None:
    """Create, change, pause, resume, clear, remove and inspect a queue."""


@queue_group.command("add")
@click.argument("name")
@setting_options(clearable=False)
@common
def queue_add(name: str, url: str, as_json: bool, **options: Any) -> None:
    """Create the queue NAME."""
    settings = settings_from_options(options, clearing=())
    qid = call(url, lambda client: client.add_queue(name, **settings))
    if as_json:
        emit_json({"q": name, "qid": qid})
    else:
        click.echo(f"queue {name} created (id {qid})")


@queue_group.command("set")
@click.argument("name")
@setting_options(clearable=True)
@common
@click.pass_context
def queue_set(ctx: click.Context, name: str, url: str, as_json: bool, **options: Any) -> None:
    """Change settings of the live queue NAME ('none' clears a setting)."""
    settings = settings_from_options(options, clearing=_given_as_none(ctx))
    if not settings:
        fail("queue set: give at least one setting to change (see --help)", USAGE_EXIT)
    config = call(url, lambda client: client.set_queue(name, **settings))
    if as_json:
        emit_json({"q": name, "config": config.to_wire()})
    else:
        click.echo(f"queue {name} settings:")
        click.echo(fields(_config_rows(config)))


def _queue_command(verb: str, method: str, done: str, reply: dict[str, Any],
                   summary: str) -> click.Command:
    """A command that calls one `AsyncClient` method with the queue name."""

    @click.command(verb, help=summary)
    @click.argument("name")
    @common
    def command(name: str, url: str, as_json: bool) -> None:
        call(url, lambda client: getattr(client, method)(name))
        if as_json:
            emit_json({"q": name, **reply})
        else:
            click.echo(f"queue {name} {done}")

    return command


queue_group.add_command(_queue_command("pause", "pause", "paused", {"state": "paused"},
                                       "Pause the queue NAME: no job of it is dispatched."))
queue_group.add_command(_queue_command("resume", "resume", "resumed", {"state": "active"},
                                       "Resume the queue NAME."))
queue_group.add_command(_queue_command("rm", "remove_queue", "removed", {"removed": True},
                                       "Remove the queue NAME (it must have no jobs)."))


@queue_group.command("clear")
@click.argument("name")
@common
def queue_clear(name: str, url: str, as_json: bool) -> None:
    """Remove the queue's jobs that have not started (new, waiting, delayed)."""
    removed = call(url, lambda client: client.clear_queue(name))
    if as_json:
        emit_json({"q": name, "removed": {"new": removed.new, "waiting": removed.waiting,
                                          "delayed": removed.delayed}})
    else:
        click.echo(f"removed {removed.total} jobs from {name} (new {removed.new}, "
                   f"waiting {removed.waiting}, delayed {removed.delayed})")


@queue_group.command("obliterate")
@click.argument("name")
@click.option("--force", is_flag=True,
              help="Even while jobs are out with workers (their outcomes are refused).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@common
def queue_obliterate(name: str, force: bool, yes: bool, url: str, as_json: bool) -> None:
    """Remove the queue NAME and every job in it, whatever their status."""
    if not yes and not click.confirm(
            f"Obliterate queue {name} and every job in it?", default=False, err=True):
        fail(f"queue {name} left as it is", ERROR_EXIT)
    removed = call(url, lambda client: client.obliterate_queue(name, force=force))
    if as_json:
        emit_json({"q": name, "removed": removed})
    else:
        click.echo(f"queue {name} obliterated ({removed} jobs removed)")


@queue_group.command("stats")
@click.argument("name")
@common
def queue_stats(name: str, url: str, as_json: bool) -> None:
    """Job counts and the dispatch picture of the queue NAME."""
    raw = call(url, lambda client: client.request(MessageType.QSTATS, {"q": name}))
    if as_json:
        emit_json(raw)
        return
    stats = QueueStats.from_wire(raw)
    counts = stats.counts
    rate = None if stats.rate is None else (
        f"{stats.rate.started_in_window} of {stats.rate.limit} per "
        f"{duration(stats.rate.window)}")
    limit = "no limit" if stats.concurrency_limit is None else stats.concurrency_limit
    click.echo(fields([
        ("queue", stats.queue), ("state", stats.state.value),
        ("new", counts.new), ("waiting", counts.waiting), ("delayed", counts.delayed),
        ("active", counts.active), ("completed", counts.completed), ("failed", counts.failed),
        ("in flight", f"{stats.in_flight} (limit: {limit})"), ("rate", rate),
        ("subscriptions", stats.subscriptions), ("credits", stats.credits),
        ("oldest waiting", stats.oldest_waiting_age),
    ]))


# -- overhop enqueue ----------------------------------------------------------------------


def parse_payload(text: str | None) -> Any:
    """The job payload from its JSON text; CliFailure (exit 2) when it is not usable."""
    if text is None:
        return None
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliFailure(f"the payload is not valid JSON: {exc}", USAGE_EXIT) from None
    try:
        check_value(payload)
    except (TypeError, ValueError) as exc:
        raise CliFailure(f"the payload cannot be sent: {exc}", USAGE_EXIT) from None
    return payload


def parse_when(text: str) -> datetime:
    """An RFC 3339 time with an offset or Z; CliFailure (exit 2) otherwise."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise CliFailure(f"--at: {text!r} is not an RFC 3339 time", USAGE_EXIT) from None
    if when.tzinfo is None:
        raise CliFailure(f"--at: {text!r} needs an offset or Z", USAGE_EXIT)
    return when


@click.command("enqueue")
@click.argument("queue")
@click.argument("payload_json", required=False, metavar="[PAYLOAD_JSON]")
@click.option("--delay-ms", type=click.IntRange(0), default=None,
              help="Start it this long after it is stored.")
@click.option("--at", "at", default=None, metavar="RFC3339", help="Start it at this time.")
@click.option("--max-attempts", type=click.IntRange(1, 1000), default=None)
@click.option("--retry-interval-ms", type=click.IntRange(1, 86_400_000), default=None)
@click.option("--lease-ms", type=click.IntRange(100, 86_400_000), default=None)
@common
def enqueue_command(queue: str, payload_json: str | None, delay_ms: int | None,
                    at: str | None, max_attempts: int | None, retry_interval_ms: int | None,
                    lease_ms: int | None, url: str, as_json: bool) -> None:
    """Add a job to QUEUE; PAYLOAD_JSON is the job's payload as JSON."""
    try:
        payload = parse_payload(payload_json)
        run_at = None if at is None else parse_when(at)
    except CliFailure as exc:
        fail(exc.message, exc.exit_code)
    if run_at is not None and delay_ms is not None:
        fail("give --delay-ms or --at, not both", USAGE_EXIT)
    jid = call(url, lambda client: client.enqueue(
        queue, payload, run_at=run_at,
        delay=None if delay_ms is None else timedelta(milliseconds=delay_ms),
        max_attempts=max_attempts,
        retry_interval=None if retry_interval_ms is None
        else timedelta(milliseconds=retry_interval_ms),
        lease=None if lease_ms is None else timedelta(milliseconds=lease_ms)))
    if as_json:
        emit_json({"jid": jid})
    else:
        click.echo(jid)


# -- overhop job / jobs ------------------------------------------------------------------


class JobGroup(click.Group):
    """`overhop job JID` shows the job; `overhop job retry|rm JID` act on it."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        plain = [arg for arg in args if arg not in ("-h", "--help")]
        if plain and not any(arg in self.commands for arg in args):
            args = ["show", *args]
        return super().parse_args(ctx, args)


def _blocked_text(job: Job) -> str | None:
    blocked = job.blocked_by
    if blocked is None:
        return None
    text = str(blocked.reason)
    if blocked.until is not None:
        text += f" until {format_time(blocked.until)}"
    if blocked.details:
        text += " (" + ", ".join(f"{k} {cell(v)}" for k, v in blocked.details.items()) + ")"
    return text


def render_job(job: Job) -> str:
    """The job's fields, its history, its log and why it waits, as text."""
    delivery = job.delivery
    own = [name for name, value in (("max_attempts", job.overrides.max_attempts),
                                   ("retry_interval", job.overrides.retry_interval),
                                   ("lease", job.overrides.lease)) if value is not None]
    pairs: list[tuple[str, Any]] = [
        ("jid", job.jid), ("queue", job.queue), ("status", job.status.value),
        ("blocked by", _blocked_text(job)),
        ("attempts", f"{job.attempts_so_far} of {job.max_attempts}"),
        ("retry interval", job.retry_interval), ("lease", job.lease),
        ("backoff", None if job.backoff is None else job.backoff.kind.value),
        ("own settings", ", ".join(own) or None),
        ("created", job.created_at), ("starts at", job.execution_start_at),
        ("finished", job.finished_at), ("payload", job.payload), ("result", job.result),
    ]
    if delivery is not None:
        pairs += [("delivery", delivery.delivery_id), ("worker", delivery.worker_id),
                  ("lease expires", delivery.lease_expires_at),
                  ("progress", delivery.progress)]
    parts = [fields(pairs), ""]
    if job.history:
        parts += ["history:", table(
            ["ATTEMPT", "OUTCOME", "COUNTED", "WORKER", "STARTED", "ENDED", "ERROR"],
            [[a.attempt, a.outcome, a.counted, a.worker_id, a.started_at, a.ended_at,
              a.error_message] for a in job.history]), ""]
    else:
        parts += ["history: none", ""]
    if job.logs:
        dropped = f" ({job.logs_dropped} older lines dropped)" if job.logs_dropped else ""
        parts += [f"logs{dropped}:", *(f"{cell(entry.at)}  {entry.line}" for entry in job.logs)]
    else:
        parts += ["logs: none"]
    return "\n".join(parts)


@click.group("job", cls=JobGroup)
def job_group() -> None:
    """Show a job (`overhop job JID`), retry a failed one or remove one."""


@job_group.command("show")
@click.argument("jid")
@common
def job_show(jid: str, url: str, as_json: bool) -> None:
    """Show the job JID with its history, logs and what holds it back."""
    raw = call(url, lambda client: client.request(MessageType.JOB, {"jid": jid}))
    if not raw:
        fail(f"no job {jid}", ERROR_EXIT)
    if as_json:
        emit_json(raw)
    else:
        click.echo(render_job(Job.from_wire(raw)))


@job_group.command("retry")
@click.argument("jid")
@common
def job_retry(jid: str, url: str, as_json: bool) -> None:
    """Give the failed job JID a fresh set of attempts."""
    status = call(url, lambda client: client.retry_job(jid))
    if as_json:
        emit_json({"jid": jid, "status": status.value})
    else:
        click.echo(f"job {jid} is {status.value} again")


@job_group.command("rm")
@click.argument("jid")
@common
def job_rm(jid: str, url: str, as_json: bool) -> None:
    """Remove the job JID (new, delayed, completed or failed)."""
    call(url, lambda client: client.remove_job(jid))
    if as_json:
        emit_json({"jid": jid, "removed": True})
    else:
        click.echo(f"job {jid} removed")


@click.command("jobs")
@click.argument("queue")
@click.option("--status", "status", required=True,
              type=click.Choice([status.value for status in JobStatus]))
@click.option("--page", type=click.IntRange(1), default=1, show_default=True)
@click.option("--page-size", type=click.IntRange(1), default=None,
              help="Jobs per page (default: the server's).")
@click.option("--after", metavar="JID", default=None,
              help="Start after this job (the 'next' a page printed); any depth.")
@common
def jobs_command(queue: str, status: str, page: int, page_size: int | None,
                 after: str | None, url: str, as_json: bool) -> None:
    """List one page of QUEUE's jobs in one status, oldest first."""
    request: dict[str, Any] = {"q": queue, "status": status, "page": page}
    if page_size is not None:
        request["page_size"] = page_size
    if after is not None:
        request["after"] = after
    raw = call(url, lambda client: client.request(MessageType.LSJOB, request))
    if as_json:
        emit_json(raw)
        return
    listing = JobPage.from_wire(raw)
    click.echo(table(["JID", "STATUS", "ATTEMPTS", "CREATED", "STARTS AT", "BLOCKED BY"],
                     [[job.jid, job.status.value, f"{job.attempts_so_far}/{job.max_attempts}",
                       job.created_at, job.execution_start_at, _blocked_text(job)]
                      for job in listing]))
    note = " (truncated: ask with a smaller --page-size)" if listing.truncated else ""
    click.echo(f"page {listing.page}, {len(listing)} jobs, page size {listing.page_size}{note}")
    if listing.next_after is not None:
        click.echo(f"more: --after {listing.next_after}")


# -- overhop status -----------------------------------------------------------------------


def render_status(status: ServerStatus) -> str:
    storage = status.storage
    application = status.raw.get("application") or {}
    summary = fields([
        ("version", status.version), ("pid", status.pid), ("started", status.started_at),
        ("uptime", f"{status.uptime.total_seconds():.0f}s"),
        ("config", status.config_source or application.get("config_source")),
        ("memory (rss)", f"{status.rss_bytes} bytes"), ("connections", status.connections),
        ("workers", len(status.workers)), ("deliveries", status.deliveries),
        ("queues", len(status.queues)), ("storage", storage.get("path")),
        ("storage used", f"{storage.get('map_used_bytes', 0)} of "
                         f"{storage.get('map_size_bytes', 0)} bytes"),
        ("space low", storage.get("space_low")),
    ])
    workers = table(["WORKER", "NAME", "HOST", "PID", "SUBSCRIPTIONS", "DELIVERIES",
                     "LAST SEEN"],
                    [[w.worker_id, w.metadata.get("name"), w.metadata.get("host"),
                      w.metadata.get("pid"), w.subscriptions, w.deliveries, w.last_seen_at]
                     for w in status.workers])
    return f"{summary}\n\n{workers}"


@click.command("status")
@common
def status_command(url: str, as_json: bool) -> None:
    """The server's version, uptime, memory, storage and connected workers."""
    raw = call(url, lambda client: client.request(MessageType.STATUS))
    if as_json:
        emit_json(raw)
    else:
        click.echo(render_status(ServerStatus.from_wire(raw)))


ADMIN_COMMANDS: tuple[click.Command, ...] = (
    queues_command, queue_group, enqueue_command, job_group, jobs_command, status_command)
"""The commands this module adds to the `overhop` group."""
