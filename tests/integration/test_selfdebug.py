"""`overhop --self-debug`: the walk over every message type, its storage, its failures."""

import asyncio
import dataclasses
import io
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from overhop.cli import cli
from overhop.wire.messages import MessageType
from selfdebug.checks import Mismatch
from selfdebug.frames import FramePrinter
from selfdebug.login import Login
from selfdebug.plan import protocol_walk
from selfdebug.run import SetupError, prepare_storage
from selfdebug.steps import Report, Step, run_steps
from selfdebug.wire import RawClient
from tests.support.server_process import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
# One run starts a server, walks about fifty steps and stops: a second or two.
RUN_TIMEOUT_S = 60.0
# Every type the walk sends or must receive: IDENT and BYE are timer and shutdown pushes.
WALKED = [t for t in MessageType if t.is_client_type] + [
    MessageType.OK, MessageType.ERR, MessageType.HI, MessageType.PONG, MessageType.QUEST,
    MessageType.SUBEND, MessageType.RESULT, MessageType.CONTROL, MessageType.ABORT]
ANSI = re.compile(r"\x1b\[")


def self_debug(home: Path, *args: str, code: str | None = None
               ) -> subprocess.CompletedProcess[str]:
    """Run `python -m overhop --self-debug ARGS` (or `python -c CODE`) with HOME at `home`
    and the current directory inside it, so the default self-debug path is under it."""
    home.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("OVERHOP_CONFIG", None)
    command = ([sys.executable, "-c", code] if code is not None
               else [sys.executable, "-m", "overhop", "--self-debug", *args])
    return subprocess.run(command, cwd=home, env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, check=False)


def frame_types(stdout: str) -> set[str]:
    return set(re.findall(r"^(?:OUT|IN ) (\w+)", stdout, re.MULTILINE))


def test_self_debug_walks_every_message_type_and_removes_its_storage(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = self_debug(home)
    assert result.returncode == 0, result.stdout + result.stderr
    assert frame_types(result.stdout) == {t.name for t in WALKED}
    # Both directions of every request, every frame with its rid.
    for name in ("ENQUEUE", "SETQUEUE", "JOBLOG", "CLEARQUEUE", "OBLITERATE", "GOODBYE"):
        assert re.search(rf"^OUT {name} +rid=\d+ +\{{", result.stdout, re.MULTILINE), name
    assert re.search(r"^IN  QUEST +rid=0 \(push\) +\{.*\"attempt\": 2", result.stdout,
                     re.MULTILINE)
    steps = len(protocol_walk(login=Login()))  # the run logs in (selfdebug/login.py)
    assert result.stdout.rstrip().endswith(f"self-debug: all {steps} steps passed")
    assert not ANSI.search(result.stdout)  # not a terminal: plain text
    # The most verbose logging (the server's default is info), on stderr.
    assert '"level": "debug"' in result.stderr
    assert '"server_started"' in result.stderr
    storage = home / ".overhop" / "data-self-debug"
    assert str(storage) in result.stdout
    assert not storage.exists()


def test_keep_artifacts_keeps_the_store_and_the_next_run_starts_afresh(tmp_path: Path
                                                                       ) -> None:
    home = tmp_path / "home"
    home.mkdir()
    custom = tmp_path / "kept-store"
    # The config file is found the way `overhop serve` finds it: ./overhop.toml here.
    (home / "overhop.toml").write_text(f'[storage]\nself_debug_path = "{custom}"\n',
                                       encoding="utf-8")
    kept = self_debug(home, "--self-debug-keep-artifacts")
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert (custom / "data.mdb").is_file()
    assert f"self-debug: storage kept at {custom}" in kept.stdout

    again = self_debug(home)
    assert again.returncode == 0, again.stdout + again.stderr
    assert not custom.exists()


def test_a_directory_that_is_not_a_store_is_left_alone(tmp_path: Path) -> None:
    home = tmp_path / "home"
    storage = home / ".overhop" / "data-self-debug"
    storage.mkdir(parents=True)
    (storage / "notes.txt").write_text("mine", encoding="utf-8")
    result = self_debug(home)
    assert result.returncode == 2
    assert result.stderr.startswith("overhop: the self-debug path ")
    assert "notes.txt" in result.stderr
    assert (storage / "notes.txt").read_text(encoding="utf-8") == "mine"


BROKEN_RUN = """
import dataclasses, sys
from overhop.wire.messages import MessageType
from selfdebug.login import Login
from selfdebug.plan import protocol_walk
from selfdebug.run import SetupError, prepare_storage
from selfdebug.run import run_self_debug

steps = protocol_walk(login=Login())
index = next(i for i, step in enumerate(steps) if step.name == "SETQUEUE")
steps[index] = dataclasses.replace(steps[index], expect=MessageType.ERR)
sys.exit(run_self_debug(keep_artifacts=False, steps=steps))
"""


def test_a_failing_step_exits_non_zero_naming_the_step(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = self_debug(home, code=BROKEN_RUN)
    assert result.returncode == 1, result.stdout + result.stderr
    number = [step.name for step in protocol_walk(login=Login())].index("SETQUEUE") + 1
    last = result.stdout.rstrip().splitlines()[-1]
    assert last.startswith(f"self-debug: FAILED at step {number} (SETQUEUE): "
                           "expected ERR, got OK"), last
    assert f"FAILED step {number}: SETQUEUE" in result.stdout
    assert "GOODBYE" not in result.stdout  # the walk stopped there
    assert not (home / ".overhop" / "data-self-debug").exists()


def _walk(port: int, steps: list[Step]) -> tuple[Report, str]:
    out = io.StringIO()

    async def main() -> Report:
        printer = FramePrinter(out, color=False)
        client = await RawClient.open("127.0.0.1", port, printer)
        try:
            return await run_steps(client, steps, printer, timeout=10.0)
        finally:
            client.close()

    return asyncio.run(main()), out.getvalue()


def test_the_walk_passes_against_a_served_broker(server: ServerProcess) -> None:
    report, output = _walk(server.port, protocol_walk())
    assert report.ok, output
    assert report.passed == [step.name for step in protocol_walk()]


@pytest.mark.parametrize("broken", ["QSTATS", "QUEST (the retry: attempt 2)"])
def test_the_runner_stops_at_a_wrong_expectation(server: ServerProcess, broken: str) -> None:
    def expect_three_waiting(state: dict[str, object], payload: dict[str, object]) -> None:
        stats = payload["stats"]
        assert isinstance(stats, dict)
        if stats.get("waiting") != 3:
            raise Mismatch(f"stats.waiting: expected 3, got {stats.get('waiting')}")

    steps = protocol_walk()
    index = [step.name for step in steps].index(broken)
    if broken == "QSTATS":
        steps[index] = dataclasses.replace(steps[index], check=expect_three_waiting)
    else:
        steps[index] = dataclasses.replace(steps[index], expect=MessageType.BYE)
    report, output = _walk(server.port, steps)
    assert not report.ok
    assert (report.failed_step, report.failed_number) == (broken, index + 1)
    assert report.passed == [step.name for step in steps[:index]]
    assert report.reason is not None
    if broken == "QSTATS":
        assert report.reason == "stats.waiting: expected 3, got 2"
    else:
        assert report.reason.startswith("expected BYE, got QUEST")
    assert f"FAILED step {index + 1}: {broken}" in output


def test_keep_artifacts_alone_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["--self-debug-keep-artifacts"], prog_name="overhop")
    assert result.exit_code == 2
    assert result.stderr == "overhop: --self-debug-keep-artifacts needs --self-debug\n"


def test_without_a_command_the_group_prints_its_help() -> None:
    result = CliRunner().invoke(cli, [], prog_name="overhop")
    assert result.exit_code == 0
    assert result.stdout.startswith("Usage: overhop")
    assert "--self-debug" in result.stdout


def test_frames_are_coloured_only_for_a_terminal() -> None:
    plain, coloured = io.StringIO(), io.StringIO()
    FramePrinter(plain, color=False).frame("IN", MessageType.ERR, "3", {"code": "X"})
    FramePrinter(coloured, color=True).frame("IN", MessageType.ERR, "3", {"code": "X"})
    assert plain.getvalue() == 'IN  ERR         rid=3         {"code": "X"}\n'
    assert ANSI.search(coloured.getvalue())
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured.getvalue()) == plain.getvalue()


def test_storage_preparation_never_takes_the_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "data.mdb").write_bytes(b"precious")
    with pytest.raises(SetupError, match="is the data directory"):
        prepare_storage(data, data)
    assert (data / "data.mdb").read_bytes() == b"precious"
    leftover = tmp_path / "data-self-debug"
    leftover.mkdir()
    (leftover / "data.mdb").write_bytes(b"old run")
    prepare_storage(leftover, data)
    assert not leftover.exists()


def test_self_debug_takes_the_dotted_overrides_serve_takes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with socket.socket() as probe:  # a port free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = tmp_path / "elsewhere" / "data"
    result = self_debug(home, "--server.port", str(port), "--storage.path", str(data),
                        "--self-debug-keep-artifacts")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"server listening on 127.0.0.1:{port}" in result.stdout
    # The self-debug store sits beside the data directory named, and is kept.
    assert (tmp_path / "elsewhere" / "data-self-debug" / "data.mdb").exists()


def test_self_debug_refuses_a_bad_override_in_one_line(tmp_path: Path) -> None:
    result = self_debug(tmp_path / "home", "--server.port", "nope")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "overhop: server.port: expected an integer, got 'nope'"]
