"""Partial frames cannot hold server memory: a frame must complete within
`wire.frame_timeout_ms`, and the bytes held in partial frames across all connections stay
under `wire.max_buffered_input_bytes` (the connection holding the most is closed). Twenty
registered connections each holding 8 MiB - 1 byte of a frame once pinned 160 MiB for good.
"""

import asyncio
import contextlib
import struct
import time
from collections.abc import Callable

from tests.support.proc_memory import peak_mib, rss_mib
from tests.support.raw_client import RawClient
from tests.support.server_process import ServerProcess

ERR = 102
MAX_FRAME = 8 * 1024 * 1024
HOLDERS = 20
TIMEOUT_MS = 2000
BOUND = 32 * 1024 * 1024
LIMITS = ("--wire.frame_timeout_ms", str(TIMEOUT_MS),
          "--wire.max_buffered_input_bytes", str(BOUND))
# The deadline is checked on the 1 s heartbeat; a loaded machine adds some more.
CLOSE_TIMEOUT_S = 10.0
# The bound (32 MiB) plus a frame the server is reading while it closes the largest holder
# and the interpreter's slack; holding every partial frame would be 160 MiB.
MAX_GROWTH_MIB = 64


async def closed_with(client: RawClient) -> str:
    """The ERR code the server sent before closing ("reset" when the close broke our write
    before the ERR could be read); a TimeoutError if the connection stays open."""
    code = "none"
    while True:
        try:
            message = await client.read_frame(timeout=CLOSE_TIMEOUT_S)
        except ConnectionError:
            return "reset"
        if message is None:
            return code
        if message["t"] == ERR:
            code = message["p"]["code"]


async def hold_partial_frame(client: RawClient) -> None:
    with contextlib.suppress(ConnectionError):
        await client.send_raw(struct.pack(">I", MAX_FRAME) + b"\x00" * (MAX_FRAME - 1))


def test_partial_frames_are_bounded_in_memory_and_in_time(
        start_server: Callable[..., ServerProcess]) -> None:
    server: ServerProcess = start_server(*LIMITS)
    assert server.process is not None
    pid = server.process.pid

    async def scenario() -> None:
        holders = [await RawClient.connect(server.port) for _ in range(HOLDERS)]
        for client in holders:
            await client.register(name="holder")
        before = rss_mib(pid)
        started = time.monotonic()
        await asyncio.gather(*(hold_partial_frame(client) for client in holders))
        codes = await asyncio.gather(*(closed_with(client) for client in holders))
        elapsed = time.monotonic() - started
        peak = peak_mib(pid)
        print(f"codes {sorted(map(str, codes))}; closed within {elapsed:.1f} s; rss before "
              f"{before:.0f} MiB, peak {peak:.0f} MiB")
        assert set(codes) <= {"INPUT_BUFFER_FULL", "FRAME_TIMEOUT", "reset"}, codes
        assert peak - before < MAX_GROWTH_MIB, (before, peak)
        shed = len(server.events("input_buffer_full_closed"))
        timed_out = len(server.events("frame_timed_out"))
        assert shed and timed_out and shed + timed_out == HOLDERS, (shed, timed_out)

    asyncio.run(scenario())


def test_a_frame_not_completed_in_time_closes_the_connection(
        start_server: Callable[..., ServerProcess]) -> None:
    server: ServerProcess = start_server(*LIMITS)

    async def scenario() -> None:
        slow = await RawClient.connect(server.port)
        await slow.register(name="slow")
        other = await RawClient.connect(server.port)
        await other.register(name="other")
        started = time.monotonic()
        await slow.send_raw(struct.pack(">I", 100) + b"\x80" * 10)
        message = await slow.read_frame(timeout=CLOSE_TIMEOUT_S)
        assert message is not None and message["t"] == ERR, message
        assert message["rid"] == "0" and message["p"]["code"] == "FRAME_TIMEOUT", message
        assert time.monotonic() - started >= TIMEOUT_MS / 1000
        assert await slow.read_frame(timeout=CLOSE_TIMEOUT_S) is None
        assert (await other.request(3))["t"] == 105  # a connection that is not mid-frame stays

    asyncio.run(scenario())
