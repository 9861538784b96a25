"""What survives a crash or a restart, the storage lock, and graceful shutdown on signals."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from tests.support.postgres import storage_engine  # noqa: F401  (both engines)
from tests.support.raw_client import RawClient
from tests.support.server_process import ServerProcess

PING, ADDQUEUE, ENQUEUE, JOB, LSJOB, QSTATS = 3, 9, 14, 15, 17, 18
OK, PONG, BYE = 101, 105, 107
JOBS = 200
# A refused second server must give up at once; this only bounds a hang.
SECOND_SERVER_TIMEOUT_S = 30.0


async def worker(port: int) -> RawClient:
    client = await RawClient.connect(port)
    await client.register(name="durability-test")
    return client


def test_acknowledged_enqueues_survive_sigkill(
        start_server: Callable[..., ServerProcess]) -> None:
    first = start_server()

    async def enqueue_all() -> list[str]:
        client = await worker(first.port)
        await client.ok(ADDQUEUE, {"name": "durable"})
        rids = [await client.send(ENQUEUE, {"q": "durable", "job_payload": {"n": index}})
                for index in range(JOBS)]
        jids = []
        for rid in rids:
            reply = await client.reply_to(rid)
            assert reply["t"] == OK, reply
            jids.append(reply["p"]["jid"])
        first.kill()
        return jids

    jids = asyncio.run(enqueue_all())
    assert len(set(jids)) == JOBS
    assert first.events("server_stopped") == []
    second = start_server(storage="data")

    async def check() -> None:
        client = await worker(second.port)
        for index, jid in enumerate(jids):
            job = await client.ok(JOB, {"jid": jid})
            assert job["jid"] == jid, (index, job)
            assert job["status"] == "waiting"
            assert job["payload"] == {"n": index}
        stats = (await client.ok(QSTATS, {"q": "durable"}))["stats"]
        assert stats == {"new": 0, "waiting": JOBS, "delayed": 0, "completed": 0, "failed": 0,
                         "active": 0, "cancelled": 0}
        listed = await client.ok(LSJOB, {"q": "durable", "status": "waiting",
                                         "page_size": 1000})
        assert [job["jid"] for job in listed["jobs"]] == jids

    asyncio.run(check())


def test_second_server_on_the_same_storage_exits_with_status_2(server: ServerProcess) -> None:
    home = server.storage_path.parent
    env = {**os.environ, "HOME": str(home)}
    env.pop("OVERHOP_CONFIG", None)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "overhop", "serve", "--server.port", "0",
         "--storage.path", str(server.storage_path), *server.extra_args],
        capture_output=True, text=True, env=env, cwd=str(home),
        timeout=SECOND_SERVER_TIMEOUT_S, check=False,
    )
    assert time.monotonic() - started < 10
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    if "--storage.postgres.dsn" in server.extra_args:  # one server per database
        assert "is in use by another overhop server" in lines[0], lines
    else:
        assert str(server.storage_path) in lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""

    async def still_serving() -> None:
        client = await worker(server.port)
        assert (await client.request(PING))["t"] == PONG

    asyncio.run(still_serving())




def test_second_server_on_a_port_in_use_exits_with_status_2(server: ServerProcess) -> None:
    home = server.storage_path.parent
    env = {**os.environ, "HOME": str(home)}
    env.pop("OVERHOP_CONFIG", None)
    result = subprocess.run(
        [sys.executable, "-m", "overhop", "serve", "--server.host", "127.0.0.1",
         "--server.port", str(server.port), "--storage.path", str(home / "other")],
        capture_output=True, text=True, env=env, cwd=str(home),
        timeout=SECOND_SERVER_TIMEOUT_S, check=False,
    )
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"cannot listen on 127.0.0.1:{server.port}" in lines[0]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP],
                         ids=["SIGTERM", "SIGINT", "SIGHUP"])
def test_signal_stops_the_server_gracefully(
        start_server: Callable[..., ServerProcess], signum: signal.Signals) -> None:
    server = start_server()

    async def run() -> str:
        client = await worker(server.port)
        await client.ok(ADDQUEUE, {"name": "kept"})
        jid = (await client.ok(ENQUEUE, {"q": "kept"}))["jid"]
        code = await asyncio.to_thread(server.stop, signum)
        assert code == 0
        # Connected peers are told, then closed.
        bye = await client.read_frame()
        assert bye is not None and bye["t"] == BYE and bye["rid"] == "0", bye
        assert bye["p"]["reason"] == "server_shutdown"
        assert await client.read_frame() is None
        return jid

    jid = asyncio.run(run())
    assert len(server.events("server_stopping")) == 1
    assert len(server.events("server_stopped")) == 1
    assert not any("Traceback" in line for line in server.log_lines)

    restarted = start_server(storage="data")

    async def check() -> None:
        client = await worker(restarted.port)
        assert (await client.ok(JOB, {"jid": jid}))["status"] == "waiting"

    asyncio.run(check())
