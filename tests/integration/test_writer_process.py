"""The server and its writer process live and die together (docs/operations.md).

- A killed server takes its writer with it, and a new server then opens the same storage.
- A killed writer stops its server (exit status 1) through the graceful path; what was
  acknowledged is on disk.
- Terminal and service-manager signals sent to the whole group do not stop the writer
  under its server: the server still writes, then stops it in order.
"""

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.raw_client import RawClient
from tests.support.server_process import ServerProcess

ADDQUEUE, ENQUEUE, JOB = 9, 14, 15
OK = 101
# How long a dying process may take to be gone; only bounds a failure.
GONE_TIMEOUT_S = 10.0


def writer_pid(server: ServerProcess) -> int:
    (started,) = server.events("server_started")
    pid = started["writer_pid"]
    assert isinstance(pid, int)
    return pid


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting to be reaped counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def wait_gone(pid: int) -> None:
    deadline = time.monotonic() + GONE_TIMEOUT_S
    while not gone(pid):
        assert time.monotonic() < deadline, f"process {pid} is still running"
        time.sleep(0.02)


async def registered(port: int) -> RawClient:
    client = await RawClient.connect(port)
    await client.register(name="writer-process-test")
    return client


async def enqueue_one(port: int) -> str:
    """Add queue `q` and one job in it; the job's id once its ENQUEUE has its OK."""
    client = await registered(port)
    await client.ok(ADDQUEUE, {"name": "q"})
    reply = await client.ok(ENQUEUE, {"q": "q", "job_payload": 1})
    await client.close()
    return str(reply["jid"])


async def job_status(port: int, jid: str) -> str:
    client = await registered(port)
    status = (await client.ok(JOB, {"jid": jid}))["status"]
    await client.close()
    return str(status)


def test_the_writer_is_a_child_of_the_server(server: ServerProcess) -> None:
    pid = writer_pid(server)
    assert server.process is not None
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    assert int(stat[1]) == server.process.pid  # its parent
    assert not gone(pid)


def test_a_killed_server_takes_its_writer_with_it(
        start_server: Callable[..., ServerProcess]) -> None:
    first = start_server()
    pid = writer_pid(first)
    jid = asyncio.run(enqueue_one(first.port))
    first.kill()
    wait_gone(pid)
    second = start_server(storage="data")  # the lock is free: the writer let go too
    assert asyncio.run(job_status(second.port, jid)) == "waiting"


def test_a_killed_writer_stops_its_server_with_status_1(
        start_server: Callable[..., ServerProcess]) -> None:
    first = start_server()
    jid = asyncio.run(enqueue_one(first.port))
    os.kill(writer_pid(first), signal.SIGKILL)
    assert first.process is not None
    assert first.process.wait(GONE_TIMEOUT_S) == 1
    assert len(first.events("storage_writer_lost")) == 1
    assert len(first.events("server_stopped")) == 1  # the graceful path, not a crash
    second = start_server(storage="data")
    assert asyncio.run(job_status(second.port, jid)) == "waiting"


def test_group_signals_do_not_stop_the_writer_under_its_server(server: ServerProcess) -> None:
    pid = writer_pid(server)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        os.kill(pid, signum)

    async def write() -> None:
        client = await registered(server.port)
        await client.ok(ADDQUEUE, {"name": "still-writing"})
        await client.close()

    asyncio.run(write())
    assert not gone(pid)
    assert server.stop() == 0
    wait_gone(pid)
