"""The admin commands and `overhop worker` against a real server."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from overhop_client import AsyncClient, Client, JobStatus

from overhop.cli import cli
from tests.support.server_process import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
# A worker process imports the SDK and connects in well under a second; a broken one
# fails the test after these bounds instead of hanging it.
DEADLINE_S = 20.0
POLL_PAUSE_S = 0.02


@pytest.fixture
def url(server: ServerProcess) -> str:
    return f"127.0.0.1:{server.port}"


def run(url: str, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, [*args, "--url", url], input=stdin, prog_name="overhop")


def run_json(url: str, *args: str) -> Any:
    result = run(url, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_one_line_error(result: Result, exit_code: int, text: str) -> None:
    assert result.exit_code == exit_code, result.output
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("overhop: ")
    assert text in result.stderr
    assert "Traceback" not in result.output


def test_queue_commands(url: str) -> None:
    added = run_json(url, "queue", "add", "emails", "--concurrency", "3", "--rate", "50",
                     "--rate-window-ms", "2000", "--max-attempts", "4", "--retry-interval-ms",
                     "250", "--backoff", "exponential", "--lease-ms", "30000")
    assert added["q"] == "emails" and added["qid"]
    with Client(url) as client:
        info = client.queue("emails")
        assert info is not None
        config = info.config.to_wire()
    assert {k: config[k] for k in ("concurrency_limit", "rate_limit", "rate_window_ms",
                                   "max_attempts", "retry_interval_ms", "backoff",
                                   "lease_ms")} == {
        "concurrency_limit": 3, "rate_limit": 50, "rate_window_ms": 2000, "max_attempts": 4,
        "retry_interval_ms": 250, "backoff": "exponential", "lease_ms": 30000}

    human = run(url, "queue", "add", "reports")
    assert human.exit_code == 0 and human.stdout.startswith("queue reports created (id ")

    changed = run_json(url, "queue", "set", "emails", "--concurrency", "none",
                       "--keep-completed", "100", "--keep-failed-for-ms", "3600000",
                       "--no-job-overrides")
    assert changed["q"] == "emails"
    assert "concurrency_limit" not in changed["config"]
    assert (changed["config"]["completed_max_count"], changed["config"]["failed_max_age_ms"],
            changed["config"]["allow_job_overrides"], changed["config"]["rate_limit"]) == (
        100, 3600000, False, 50)
    human = run(url, "queue", "set", "emails", "--rate", "none")
    assert human.exit_code == 0, human.output
    lines = human.stdout.splitlines()
    assert lines[0] == "queue emails settings:"
    assert "rate                -" in lines and "keep completed      100" in lines

    assert run_json(url, "queue", "pause", "emails") == {"q": "emails", "state": "paused"}
    stats = run_json(url, "queue", "stats", "emails")
    assert stats["state"] == "paused" and stats["q"] == "emails"
    assert run(url, "queue", "resume", "emails").stdout == "queue emails resumed\n"

    listing = run_json(url, "queues")
    names = {queue["name"]: queue for queue in listing["queues"]}
    assert set(names) == {"_system", "emails", "reports"}
    assert names["emails"]["stats"]["waiting"] == 0
    table = run(url, "queues").stdout.splitlines()
    assert table[0].split() == ["NAME", "STATE", "NEW", "WAITING", "DELAYED", "ACTIVE",
                                "COMPLETED", "FAILED", "CANCELLED", "SUBSCRIPTIONS",
                                "CONCURRENCY"]
    assert [line.split()[0] for line in table[1:]] == ["_system", "emails", "reports"]
    # Aligned: counts end in the column where their header ends.
    end = table[0].index("WAITING") + len("WAITING")
    for line in table[1:]:
        assert line[end - 1] in "0123456789-" and line[end] == " ", table

    assert run_json(url, "queue", "rm", "reports") == {"q": "reports", "removed": True}
    assert run(url, "queue", "stats", "reports").exit_code == 1


def test_enqueue_jobs_and_job_commands(url: str) -> None:
    run_json(url, "queue", "add", "work", "--max-attempts", "1")
    first = run_json(url, "enqueue", "work", '{"n": 1, "tags": ["a"]}')["jid"]
    assert first.startswith("work:")
    delayed = run(url, "enqueue", "work", "[1, 2.5]", "--delay-ms", "3600000")
    assert delayed.exit_code == 0
    delayed_jid = delayed.stdout.strip()
    scheduled = run_json(url, "enqueue", "work", "--at", "2099-01-01T00:00:00Z",
                         "--max-attempts", "1")["jid"]

    page = run_json(url, "jobs", "work", "--status", "delayed", "--page-size", "1")
    assert (page["page"], page["page_size"]) == (1, 1)
    assert [job["jid"] for job in page["jobs"]] == [delayed_jid]
    assert page["next_after"] == delayed_jid
    page = run_json(url, "jobs", "work", "--status", "delayed", "--page", "2",
                    "--page-size", "1")
    assert [job["jid"] for job in page["jobs"]] == [scheduled]
    assert page["jobs"][0]["execution_start_at"] == "2099-01-01T00:00:00.000Z"
    assert page["next_after"] is None
    lines = run(url, "jobs", "work", "--status", "delayed", "--page-size", "1").stdout
    assert lines.splitlines()[-1] == f"more: --after {delayed_jid}"
    page = run_json(url, "jobs", "work", "--status", "delayed", "--after", delayed_jid)
    assert [job["jid"] for job in page["jobs"]] == [scheduled]
    # Paging mistakes name the CLI's flags, not the protocol's fields.
    assert_one_line_error(run(url, "jobs", "work", "--status", "delayed", "--after",
                              "elsewhere:x"), 2, "--after: 'elsewhere:x' is not a job id of "
                          "queue 'work'")
    assert_one_line_error(run(url, "jobs", "work", "--status", "delayed", "--after",
                              delayed_jid, "--page", "2"), 2,
                          "give --after or --page, not both")
    assert_one_line_error(run(url, "jobs", "work", "--status", "delayed", "--page",
                              "200000", "--page-size", "1"), 2,
                          "--page 200000 would skip 199999 jobs, more than 100000: page on "
                          "with --after JID")
    assert_one_line_error(run(url, "jobs", "work", "--status", "delayed", "--page-size",
                              "5000"), 2, "overhop: --page-size must be")
    table = run(url, "jobs", "work", "--status", "waiting").stdout.splitlines()
    assert table[0].split()[:4] == ["JID", "STATUS", "PRI", "ATTEMPTS"]
    assert table[1].startswith(first) and "no_worker_credit" in table[1]
    assert table[1].split()[2] == "5"  # no --priority: the default
    assert table[-1] == "page 1, 1 jobs, page size 15"
    assert_one_line_error(run(url, "enqueue", "work", "{}", "--priority", "10"), 2,
                          "--priority must be 1 to 9, not 10")

    record = run_json(url, "job", first)
    assert record["payload"] == {"n": 1, "tags": ["a"]}
    assert record["blocked_by"] == {"reason": "no_worker_credit", "subscriptions": 0}

    async def work_and_fail() -> None:
        async with await AsyncClient.connect(url) as client:
            await client.subscribe("work", 1)
            quest = await asyncio.wait_for(client.quests.get(), DEADLINE_S)
            await client.log(quest, "fetching", "giving up")
            await client.fail(quest, "no luck")

    asyncio.run(work_and_fail())
    shown = run(url, "job", first)
    assert shown.exit_code == 0, shown.output
    text = shown.stdout
    assert "status          failed" in text
    assert "attempts        1 of 1" in text
    assert "history:" in text and "failed" in text and "no luck" in text
    assert "fetching" in text and "giving up" in text
    delayed_text = run(url, "job", delayed_jid).stdout
    assert "blocked by      scheduled until " in delayed_text
    assert "logs: none" in delayed_text

    assert run_json(url, "job", "retry", first) == {"jid": first, "status": "waiting"}
    assert run(url, "job", "retry", first).stderr.startswith(
        "overhop: JOB_STATUS_CONFLICT: ")
    assert run_json(url, "job", "rm", delayed_jid) == {"jid": delayed_jid, "removed": True}
    assert run(url, "job", "rm", scheduled).stdout == f"job {scheduled} removed\n"
    assert_one_line_error(run(url, "job", delayed_jid), 1, f"no job {delayed_jid}")

    cleared = run_json(url, "queue", "clear", "work")
    assert cleared == {"q": "work", "removed": {"new": 0, "waiting": 1, "delayed": 0}}
    declined = run(url, "queue", "obliterate", "work", stdin="n\n")
    assert declined.exit_code == 1 and "left as it is" in declined.stderr
    assert run_json(url, "queue", "stats", "work")["q"] == "work"  # still there
    confirmed = run(url, "queue", "obliterate", "work", stdin="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    assert confirmed.stdout == "queue work obliterated (0 jobs removed)\n"


def test_enqueue_with_a_task_and_list_and_show_it(url: str) -> None:
    run_json(url, "queue", "add", "mail")
    named = run_json(url, "enqueue", "mail", '{"to": "a"}', "--task", "send_email")["jid"]
    plain = run(url, "enqueue", "mail", "1").stdout.strip()
    assert run_json(url, "job", named)["task"] == "send_email"
    shown = run(url, "job", named).stdout
    assert "task            send_email" in shown
    assert "task            -" in run(url, "job", plain).stdout

    page = run_json(url, "jobs", "mail", "--status", "waiting", "--task", "send_email")
    assert ([job["jid"] for job in page["jobs"]], page["task"]) == ([named], "send_email")
    lines = run(url, "jobs", "mail", "--status", "waiting", "--task", "send_email"
                ).stdout.splitlines()
    assert lines[0].split()[-1] == "TASK" and lines[1].split()[-1] == "send_email"
    assert lines[-1] == "page 1, 1 jobs, page size 15, task send_email"
    everything = run(url, "jobs", "mail", "--status", "waiting").stdout.splitlines()
    assert [line.split()[-1] for line in everything[1:3]] == ["send_email", "-"]

    assert_one_line_error(run(url, "enqueue", "mail", "--task", "bad name"), 2,
                          "--task: invalid task name 'bad name'")
    assert_one_line_error(run(url, "jobs", "mail", "--status", "waiting", "--task", "x y"),
                          2, "--task: invalid task name 'x y'")
    assert_one_line_error(run(url, "jobs", "mail", "--status", "waiting", "--task", "t",
                              "--page", "2"), 2, "give --task with --after, not --page")
    assert len(run_json(url, "jobs", "mail", "--status", "waiting")["jobs"]) == 2


def test_enqueue_with_a_unique_key_and_a_group(url: str) -> None:
    run_json(url, "queue", "add", "tenants", "--group-concurrency", "2")
    changed = run(url, "queue", "set", "tenants", "--group-concurrency", "3").stdout
    assert [line.split() for line in changed.splitlines()
            if line.startswith("group concurrency")] == [["group", "concurrency", "3"]]
    first = run_json(url, "enqueue", "tenants", "1", "--unique-key", "k", "--group", "acme")
    assert first["duplicate"] is False
    again = run_json(url, "enqueue", "tenants", "2", "--unique-key", "k")
    assert again == {"jid": first["jid"], "duplicate": True}
    assert run(url, "enqueue", "tenants", "--unique-key", "k").stdout.strip() == first["jid"]
    timed = run(url, "enqueue", "tenants", "--unique-key", "t", "--unique-for", "60000"
                ).stdout.strip()
    shown = run(url, "job", first["jid"]).stdout
    assert "group           acme" in shown and "unique key      k (held until finish)" in shown
    assert "unique key      t (held until 20" in run(url, "job", timed).stdout
    assert_one_line_error(run(url, "enqueue", "tenants", "--unique-for", "start"), 2,
                          "--unique-for needs --unique-key")
    assert_one_line_error(run(url, "enqueue", "tenants", "--unique-key", "k",
                              "--unique-for", "later"), 2,
                          "--unique-for: 'later' is not start, finish or milliseconds")
    refused = run(url, "queue", "set", "tenants", "--group-concurrency", "0")
    assert refused.exit_code == 2 and "0 is not in 1..1000000" in refused.stderr


def test_obliterate_refuses_active_jobs_unless_forced(url: str) -> None:
    run_json(url, "queue", "add", "busy")
    run_json(url, "enqueue", "busy", '"payload"')

    async def hold_a_job() -> None:
        async with await AsyncClient.connect(url) as client:
            await client.subscribe("busy", 1)
            await asyncio.wait_for(client.quests.get(), DEADLINE_S)
            refused = await asyncio.to_thread(run, url, "queue", "obliterate", "busy", "--yes")
            assert_one_line_error(refused, 1, "QUEUE_HAS_ACTIVE_JOBS: ")
            forced = await asyncio.to_thread(run, url, "queue", "obliterate", "busy", "--yes",
                                             "--force", "--json")
            assert forced.exit_code == 0, forced.output
            assert json.loads(forced.stdout) == {"q": "busy", "removed": 1}

    asyncio.run(hold_a_job())


def test_status_and_url_from_the_environment(url: str) -> None:
    result = CliRunner().invoke(cli, ["status", "--json"], env={"OVERHOP_URL": url})
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["application"]["name"] == "overhop"
    me = [w for w in report["pools"]["worker_list"] if w["metadata"].get("name")
          == "overhop-cli"]
    assert len(me) == 1
    human = run(url, "status").stdout
    assert "version       " in human and "WORKER" in human and "overhop-cli" in human
    storage = report["storage"]
    assert (f"storage used  {storage['map_used_bytes']} bytes of the map's "
            f"{storage['map_size_bytes']} (grows up to {storage['max_map_size_bytes']})"
            ) in human


def test_error_paths(url: str) -> None:
    assert_one_line_error(run(url, "queue", "stats", "nope"), 1, "QUEUE_NOT_FOUND: ")
    assert_one_line_error(run(url, "enqueue", "nope", "1"), 1, "QUEUE_NOT_FOUND: ")
    assert_one_line_error(run(url, "queue", "pause", "_system"), 1, "QUEUE_SYSTEM: ")
    assert_one_line_error(run(url, "queue", "add", "bad name"), 1, "QUEUE_NAME_INVALID: ")
    assert_one_line_error(run(url, "enqueue", "anything", "{not json"), 2,
                          "the payload is not valid JSON")

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    assert_one_line_error(run(f"127.0.0.1:{closed_port}", "queues"), 1,
                          f"cannot connect to 127.0.0.1:{closed_port}")


WORKER_MODULE = '''
from overhop_client import JobContext, Worker

app = Worker("127.0.0.1:1", concurrency=2, name="cli-worker-test")


@app.handler("cli-jobs")
async def double(ctx: JobContext) -> int:
    ctx.log(f"doubling {ctx.payload}")
    return ctx.payload * 2
'''


def test_worker_command_runs_a_worker_until_sigterm(url: str, tmp_path: Path) -> None:
    (tmp_path / "cli_worker_app.py").write_text(WORKER_MODULE, encoding="utf-8")
    with Client(url) as client:
        client.add_queue("cli-jobs")
        jid = client.enqueue("cli-jobs", 21)
        # The module's own address is wrong on purpose: --url must replace it.
        process = subprocess.Popen(
            [sys.executable, "-m", "overhop", "worker", "cli_worker_app:app", "--url", url],
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            give_up = time.monotonic() + DEADLINE_S
            job = client.job(jid)
            while (job is None or job.status != JobStatus.COMPLETED) \
                    and time.monotonic() < give_up and process.poll() is None:
                time.sleep(POLL_PAUSE_S)
                job = client.job(jid)
            assert job is not None and job.status == JobStatus.COMPLETED, (
                job, process.poll())
            assert job.result == 42
            assert [entry.line for entry in job.logs] == ["doubling 21"]
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=DEADLINE_S)
    assert process.returncode == 0, stderr
    assert "worker_ready" in stderr


def test_worker_command_refuses_a_bad_target(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "overhop", "worker", "no_such_module:app"], cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=DEADLINE_S, check=False)
    assert result.returncode == 2
    assert result.stderr == "overhop: no module named 'no_such_module'\n"


def test_a_cli_call_is_logged_at_debug_only(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--logging.level", "debug")
    url = f"127.0.0.1:{server.port}"
    before = len(server.log_lines)
    assert run(url, "queues").exit_code == 0
    deadline = time.monotonic() + 10
    while not server.events("worker_gone") and time.monotonic() < deadline:
        time.sleep(0.05)  # the server logs the connection's end once it sees it close
    lines = [json.loads(line) for line in server.log_lines[before:]]
    assert {line["event"] for line in lines} >= {"worker_registered", "worker_gone"}
    assert [line for line in lines if line["level"] != "debug"] == []


def test_worker_control_commands(url: str, tmp_path: Path) -> None:
    (tmp_path / "cli_worker_app.py").write_text(WORKER_MODULE, encoding="utf-8")
    with Client(url) as client:
        client.add_queue("cli-jobs")

        def shown() -> list[str]:
            """The status table's row of the worker, split on spaces."""
            rows = [line.split() for line in run(url, "status").stdout.splitlines()
                    if "cli-worker-test" in line]
            return rows[0] if rows else []

        def wait_for(accept: Callable[[list[str]], bool], what: str) -> list[str]:
            give_up = time.monotonic() + DEADLINE_S
            while not accept(row := shown()):
                assert time.monotonic() < give_up and process.poll() is None, (what, row)
                time.sleep(POLL_PAUSE_S)
            return row

        # `run` spelled out; the words quiet, stop and concurrency are subcommands.
        process = subprocess.Popen(
            [sys.executable, "-m", "overhop", "worker", "run", "cli_worker_app:app",
             "--url", url], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # The columns: WORKER NAME STATE CONCURRENCY HOST ...
            assert wait_for(lambda row: row[2:4] == ["running", "2"], "reported")[1] == (
                "cli-worker-test")
            result = run(url, "worker", "concurrency", "cli-worker-test", "5")
            assert result.exit_code == 0 and result.stdout == (
                "told to run 5 at once: 1 worker\n"), result.output
            wait_for(lambda row: row[3] == "5", "concurrency 5")
            assert run_json(url, "worker", "quiet", "cli-worker-test") == {"workers": 1}
            wait_for(lambda row: row[2] == "quiet", "quiet")
            assert process.poll() is None  # quiet: still running, still connected
            result = run(url, "worker", "stop", "cli-worker-test", "--grace", "5")
            assert result.stdout == "told to stop: 1 worker\n", result.output
            _, stderr = process.communicate(timeout=DEADLINE_S)  # it exits by itself
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 0, stderr
    assert "control_received action=stop" in stderr
    assert_one_line_error(run(url, "worker", "quiet", "cli-worker-test"), 1,
                          "WORKER_NOT_FOUND: no connected worker has the name or id "
                          "'cli-worker-test'")
    result = run(url, "worker", "concurrency", "cli-worker-test", "0")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "0 is not in the range 1<=x<=10000" in result.output
    result = run(url, "worker", "stop", "cli-worker-test", "--grace", "-1")
    assert result.exit_code == 2 and "Traceback" not in result.output
