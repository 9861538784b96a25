"""The admin commands' input checks and output formatting, and loading `overhop worker`
targets: everything that happens before (or without) a server."""

import io
import socket
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from overhop_client import Job, Worker

from overhop.cli import cli
from overhop.cli.enqueue import parse_payload, parse_when, read_payload_text
from overhop.cli.exits import CliFailure
from overhop.cli.jobs import render_job
from overhop.cli.queue_settings import settings_from_options
from overhop.cli.render import cell, duration, table
from overhop.cli.worker import WorkerLoadError, load_worker


@pytest.fixture
def closed_url() -> str:
    """An address nothing listens on: commands that get past their checks fail to connect."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def invoke(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=stdin, prog_name="overhop")


def assert_one_line(result: Result, exit_code: int, line: str) -> None:
    assert result.exit_code == exit_code, result.output
    assert result.stdout == ""
    assert result.stderr == f"overhop: {line}\n"


# -- formatting --------------------------------------------------------------------------


def test_table_aligns_text_left_and_numbers_right() -> None:
    text = table(["NAME", "COUNT", "LIMIT"], [["a", 5, None], ["longer", 120, 3]])
    assert text.splitlines() == [
        "NAME    COUNT  LIMIT",
        "a           5      -",
        "longer    120      3",
    ]


def test_cells_and_durations() -> None:
    assert cell(None) == "-"
    assert cell(True) == "yes"
    assert cell(b"\x00\xff") == '{"$bin": "00ff"}'
    assert cell({"a": [1, 2.5]}) == '{"a": [1, 2.5]}'
    assert cell(datetime(2030, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)) == "2030-01-02T03:04:05.006Z"
    assert [duration(timedelta(milliseconds=ms)) for ms in (0, 250, 2000, 90_000, 300_000,
                                                           7_200_000)] == [
        "0ms", "250ms", "2s", "90s", "5m", "2h"]


def test_render_job_shows_history_logs_and_what_holds_it() -> None:
    job = Job.from_wire({
        "uuid": "u", "jid": "q:u", "queue_name": "q", "payload": {"n": 1},
        "status": "delayed", "execution_start_at": "2030-01-01T00:00:00.000Z",
        "max_attempts": 3, "retry_interval_ms": 1000, "lease_ms": 60000,
        "backoff": {"kind": "fixed", "max_ms": None, "jitter": False},
        "overrides": {"max_attempts": 3}, "created_at": "2029-12-31T23:00:00.000Z",
        "finished_at": None, "result": None,
        "history": [{"attempt": 1, "counted": True, "outcome": "failed", "worker_id": "w",
                     "delivery_id": "d", "error": {"message": "boom"},
                     "started_at": "2029-12-31T23:00:01.000Z",
                     "ended_at": "2029-12-31T23:00:02.000Z"}],
        "logs": [{"at": "2029-12-31T23:00:01.500Z", "line": "trying"}], "logs_dropped": 4,
        "blocked_by": {"reason": "backing_off", "until": "2030-01-01T00:00:00.000Z"},
        "runtime": {"attempts_so_far": 1}})
    text = render_job(job)
    assert "blocked by      backing_off until 2030-01-01T00:00:00.000Z" in text
    assert "attempts        1 of 3" in text
    assert "own settings    max_attempts" in text
    assert 'payload         {"n": 1}' in text
    history = text.split("history:\n")[1].splitlines()
    assert history[0].split() == ["ATTEMPT", "OUTCOME", "COUNTED", "WORKER", "STARTED",
                                  "ENDED", "ERROR"]
    assert history[1].split() == ["1", "failed", "yes", "w", "2029-12-31T23:00:01.000Z",
                                  "2029-12-31T23:00:02.000Z", "boom"]
    assert text.endswith("logs (4 older lines dropped):\n2029-12-31T23:00:01.500Z  trying")


# -- input ---------------------------------------------------------------------------------


def test_parse_payload_and_time() -> None:
    assert parse_payload(None) is None
    assert parse_payload('{"a": [1, 2.5, null]}') == {"a": [1, 2.5, None]}
    with pytest.raises(CliFailure, match="not valid JSON") as bad:
        parse_payload("{")
    assert bad.value.exit_code == 2
    with pytest.raises(CliFailure, match="cannot be sent"):
        parse_payload(str(2**64))
    assert parse_when("2030-01-01T10:00:00+02:00") == datetime(2030, 1, 1, 8, tzinfo=UTC)
    with pytest.raises(CliFailure, match="needs an offset"):
        parse_when("2030-01-01T10:00:00")
    with pytest.raises(CliFailure, match="not an RFC 3339 time"):
        parse_when("tomorrow")


def test_settings_from_options_converts_ms_and_keeps_only_what_was_given() -> None:
    options = {"concurrency_limit": None, "rate_limit": 5, "rate_window": 2000,
               "lease": None, "keep_failed_for": 60_000, "backoff": None,
               "backoff_jitter": False, "allow_job_overrides": None}
    assert settings_from_options(options, clearing=["lease"]) == {
        "rate_limit": 5, "rate_window": timedelta(seconds=2), "lease": None,
        "keep_failed_for": timedelta(minutes=1), "backoff_jitter": False}


def test_bad_input_is_refused_before_connecting(closed_url: str) -> None:
    assert_one_line(invoke("enqueue", "q", "{oops", "--url", closed_url), 2,
                    "the payload is not valid JSON: Expecting property name enclosed in "
                    "double quotes: line 1 column 2 (char 1)")
    assert_one_line(invoke("enqueue", "q", "--at", "2030-01-01T00:00:00", "--url", closed_url),
                    2, "--at: '2030-01-01T00:00:00' needs an offset or Z")
    assert_one_line(invoke("enqueue", "q", "--at", "2030-01-01T00:00:00Z", "--delay-ms", "5",
                           "--url", closed_url), 2, "give --delay-ms or --at, not both")
    assert_one_line(invoke("queue", "set", "q", "--url", closed_url), 2,
                    "queue set: give at least one setting to change (see --help)")
    assert_one_line(invoke("queues", "--url", "http://example.com"), 2,
                    "not an Overhop address: 'http://example.com' (expected host:port or "
                    "overhop://host:port)")
    # Option values click checks: a usage error, exit 2.
    assert invoke("queue", "set", "q", "--concurrency", "0", "--url", closed_url
                  ).exit_code == 2
    assert invoke("queue", "set", "q", "--rate-window-ms", "none", "--url", closed_url
                  ).exit_code == 2
    assert invoke("queue", "add", "q", "--concurrency", "none", "--url", closed_url
                  ).exit_code == 2
    assert invoke("jobs", "q", "--status", "finished", "--url", closed_url).exit_code == 2


def test_a_server_that_cannot_be_reached_is_one_line_and_exit_1(closed_url: str) -> None:
    for args in (["queues"], ["queue", "set", "q", "--concurrency", "none"],
                 ["job", "q:123"], ["job", "retry", "q:123"], ["status", "--json"]):
        result = invoke(*args, "--url", closed_url)
        assert result.exit_code == 1, (args, result.output)
        assert result.stdout == ""
        assert result.stderr.startswith(f"overhop: cannot connect to {closed_url}: ")
        assert result.stderr.count("\n") == 1


def test_job_shows_by_default_and_keeps_its_subcommands() -> None:
    help_text = invoke("job", "--help").stdout
    assert "retry" in help_text and "rm" in help_text and "show" in help_text
    assert "Show the job JID" in invoke("job", "q:1", "--help").stdout


def test_obliterate_asks_first(closed_url: str) -> None:
    declined = invoke("queue", "obliterate", "q", "--url", closed_url, stdin="n\n")
    assert declined.exit_code == 1
    assert declined.stderr.endswith("overhop: queue q left as it is\n")
    accepted = invoke("queue", "obliterate", "q", "--url", closed_url, stdin="y\n")
    assert "cannot connect" in accepted.stderr  # went on to the server
    assert "cannot connect" in invoke("queue", "obliterate", "q", "--yes", "--url",
                                      closed_url).stderr


# -- overhop worker targets ---------------------------------------------------------------


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def write(directory: Path, name: str, source: str) -> None:
    (directory / f"{name}.py").write_text(source, encoding="utf-8")


def test_load_worker_finds_a_worker_or_a_factory(in_tmp: Path) -> None:
    write(in_tmp, "wk_direct", "from overhop_client import Worker\napp = Worker('h:1')\n"
                               "class Holder:\n    inner = app\n")
    write(in_tmp, "wk_factory", "from overhop_client import Worker\n"
                                "def make():\n    return Worker('h:2')\n")
    direct = load_worker("wk_direct:app")
    assert isinstance(direct, Worker) and direct.url == "h:1"
    assert load_worker("wk_direct:Holder.inner") is direct
    made = load_worker("wk_factory:make")
    assert isinstance(made, Worker) and made.url == "h:2"


@pytest.mark.parametrize(("target", "message"), [
    ("no_colon", "'no_colon' is not MODULE:ATTRIBUTE (e.g. tasks:app)"),
    (":app", "':app' is not MODULE:ATTRIBUTE (e.g. tasks:app)"),
    ("mod:", "'mod:' is not MODULE:ATTRIBUTE (e.g. tasks:app)"),
    ("wk_missing_module:app", "no module named 'wk_missing_module'"),
    ("wk_bad:nothing", "'wk_bad' has no attribute 'nothing'"),
    ("wk_bad:number", "wk_bad:number is a int, not an overhop_client.Worker or a function "
                      "returning one"),
    ("wk_bad:returns_text", "wk_bad:returns_text() returned a str, not an "
                            "overhop_client.Worker"),
    # Errors raised by the user's code say where (file and line).
    ("wk_bad:raises", "wk_bad:raises() failed: ValueError: no worker today (wk_bad.py, "
                      "line 5)"),
    ("wk_broken:app", "importing 'wk_broken' failed: ZeroDivisionError: division by zero "
                      "(wk_broken.py, line 2)"),
    ("wk_imports_missing:app", "importing 'wk_imports_missing' failed: "
                               "ModuleNotFoundError: No module named 'not_installed_anywhere' "
                               "(wk_imports_missing.py, line 1)"),
    ("wk_syntax:app", "importing 'wk_syntax' failed: SyntaxError: invalid syntax "
                      "(wk_syntax.py, line 2)"),
])
def test_load_worker_says_what_is_wrong(in_tmp: Path, target: str, message: str) -> None:
    write(in_tmp, "wk_bad", "number = 3\ndef returns_text():\n    return 'x'\n"
                            "def raises():\n    raise ValueError('no worker today')\n")
    write(in_tmp, "wk_broken", "x = 1\n1 / 0\n")
    write(in_tmp, "wk_syntax", "x = 1\ndef (:\n")
    write(in_tmp, "wk_imports_missing", "import not_installed_anywhere\n")
    with pytest.raises(WorkerLoadError) as error:
        load_worker(target)
    assert str(error.value) == message


def test_worker_command_reports_a_bad_target_in_one_line(in_tmp: Path) -> None:
    assert_one_line(invoke("worker", "nothing-here"), 2,
                    "'nothing-here' is not MODULE:ATTRIBUTE (e.g. tasks:app)")
    write(in_tmp, "wk_cli", "from overhop_client import Worker\napp = Worker()\n")
    assert_one_line(invoke("worker", "wk_cli:app", "--url", "ftp://x"), 2,
                    "not an Overhop address: 'ftp://x' (expected host:port or "
                    "overhop://host:port)")
    # A worker without handlers stops at once: exit 1, one line.
    assert_one_line(invoke("worker", "wk_cli:app", "--url", "127.0.0.1:1"), 1,
                    "no handlers registered: use @worker.handler(queue) or "
                    "@worker.task(name, queue=queue)")


def test_payload_text_from_an_argument_standard_input_or_a_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert read_payload_text('{"a": 1}') == '{"a": 1}'
    assert read_payload_text(None) is None
    payload_file = tmp_path / "payload.json"
    payload_file.write_text('{"to": "ann"}')
    assert read_payload_text(f"@{payload_file}") == '{"to": "ann"}'
    monkeypatch.setattr(sys, "stdin", io.StringIO('[1, 2]'))
    assert read_payload_text("-") == "[1, 2]"
    with pytest.raises(CliFailure) as refused:
        read_payload_text(f"@{tmp_path / 'missing.json'}")
    assert refused.value.exit_code == 2
    assert refused.value.message == (f"cannot read the payload file "
                                     f"'{tmp_path / 'missing.json'}': No such file or directory")
