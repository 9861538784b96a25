"""`overhop schedule add|ls|rm|pause|resume` against a real server."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from overhop_client import Client

from overhop.cli import cli
from tests.support.server_process import ServerProcess


@pytest.fixture
def url(server: ServerProcess) -> str:
    return f"127.0.0.1:{server.port}"


def run(url: str, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, [*args, "--url", url], input=stdin, prog_name="overhop")


def one_line_error(result: Result, exit_code: int, text: str) -> None:
    assert result.exit_code == exit_code, result.output
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("overhop: ") and text in result.stderr
    assert "Traceback" not in result.output


def test_schedule_commands(url: str, tmp_path: Path) -> None:
    with Client(url) as client:
        client.add_queue("reports")
    payload_file = tmp_path / "payload.json"
    payload_file.write_text('{"report": "daily"}', encoding="utf-8")
    added = run(url, "schedule", "add", "daily", "reports", "30 2 * * *", "--tz",
                "Europe/Berlin", "--payload", f"@{payload_file}", "--missed", "once",
                "--max-attempts", "2", "--task", "reports.daily", "--priority", "8", "--json")
    assert added.exit_code == 0, added.output
    reply = json.loads(added.stdout)
    assert reply["name"] == "daily" and reply["q"] == "reports"
    assert reply["next_run_at"].endswith("Z")

    human = run(url, "schedule", "add", "hourly", "reports", "0 * * * *", "--payload", "-",
                stdin="[1, 2]")
    assert human.exit_code == 0, human.output
    assert human.stdout.startswith("schedule hourly added; next run ")

    listed = run(url, "schedule", "ls")
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NAME", "QUEUE", "CRON", "TZ", "MISSED", "STATE", "NEXT",
                                "RUN", "LAST", "RUN"]
    assert lines[1].startswith("daily") and "Europe/Berlin" in lines[1]
    assert lines[2].startswith("hourly")
    rows = json.loads(run(url, "schedule", "ls", "--json").stdout)["schedules"]
    assert [(r["name"], r["job_payload"], r["missed"]) for r in rows] == [
        ("daily", {"report": "daily"}, "once"), ("hourly", [1, 2], "skip")]
    assert rows[0]["overrides"] == {"max_attempts": 2}
    assert (rows[0]["task"], rows[0]["priority"]) == ("reports.daily", 8)
    assert (rows[1]["task"], rows[1]["priority"]) == (None, 5)

    paused = run(url, "schedule", "pause", "daily")
    assert paused.exit_code == 0 and "paused    yes" in paused.stdout
    resumed = json.loads(run(url, "schedule", "resume", "daily", "--json").stdout)
    assert resumed["paused"] is False and resumed["next_run_at"]
    assert run(url, "schedule", "rm", "hourly").stdout == "schedule hourly removed\n"
    with Client(url) as client:
        assert [s.name for s in client.schedules()] == ["daily"]


def test_schedule_errors_are_one_line(url: str) -> None:
    with Client(url) as client:
        client.add_queue("reports")
    one_line_error(run(url, "schedule", "rm", "nope"), 1, "SCHEDULE_NOT_FOUND")
    one_line_error(run(url, "schedule", "pause", "nope"), 1, "SCHEDULE_NOT_FOUND")
    one_line_error(run(url, "schedule", "add", "s", "reports", "every day"), 1, "BAD_CRON")
    one_line_error(run(url, "schedule", "add", "s", "reports", "0 * * * *", "--tz", "Nowhere"),
                   1, "BAD_TIMEZONE")
    one_line_error(run(url, "schedule", "add", "s", "missing", "0 * * * *"), 1,
                   "QUEUE_NOT_FOUND")
    one_line_error(run(url, "schedule", "add", "s", "reports", "0 * * * *", "--payload",
                       "{not json"), 2, "not valid JSON")
    one_line_error(run(url, "schedule", "add", "s", "reports", "0 * * * *", "--priority",
                       "0"), 2, "--priority must be 1 to 9, not 0")
    one_line_error(run(url, "schedule", "add", "s", "reports", "0 * * * *", "--task", "a/b"),
                   2, "--task")
    bad_choice = run(url, "schedule", "add", "s", "reports", "0 * * * *", "--missed", "twice")
    assert bad_choice.exit_code == 2 and "Traceback" not in bad_choice.output
