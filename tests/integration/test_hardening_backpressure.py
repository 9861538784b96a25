"""A peer that sends requests and does not read the replies cannot grow the server's memory
(replies to a few KB of requests once built GBs) nor slow the other clients down (a flood of
pipelined ENQUEUEs once held another client's ENQUEUE -> QUEST -> COMPLETE for seconds).

Memory is the server's resident size read from /proc (VmHWM, the peak, against VmRSS
before the abuse), so it is measured, not inferred.
"""

import asyncio
import socket
import statistics
import struct
import threading
import time
from collections.abc import Callable

from tests.support.proc_memory import peak_mib, rss_mib
from tests.support.raw_client import RawClient, frame, tight_client
from tests.support.server_process import ServerProcess

HELLO, REGISTER, ADDQUEUE, SUBSCRIBE, ENQUEUE, JOB = 1, 2, 9, 6, 14, 15
ACK, COMPLETE, PING, PONG, QUEST, OK = 19, 20, 3, 105, 106, 101
BIG_PAYLOAD = b"x" * (7 * 1024 * 1024)
JOB_REQUESTS = 100  # 6.8 KB of requests, 700 MiB of replies if all were built
# What one non-reading peer may add to the server's peak, above its size before: the
# high-water mark (1 MiB), one reply being built and written (7 MiB here, held twice while
# it is encoded), the requests waiting for their commit (2048 at about 1 KiB) and the
# interpreter's own slack. The unbounded server grew by 248 to 714 MiB in these scenarios.
MAX_GROWTH_MIB = 48
SETTLE_TIMEOUT_S = 20.0
POLL_INTERVAL_S = 0.2
FLOOD_SECONDS = 4.0  # how long the flooding producer keeps writing (it blocks sooner)
ROUNDS = 30
# A round is three commits on an idle disk (ENQUEUE, the dispatch, COMPLETE): a few ms; the
# flood made it 3-6 s. Generous for a loaded 2-core CI machine.
MEDIAN_ROUND_S = 0.1
MAX_ROUND_S = 1.0




async def settled_peak(admin: RawClient, pid: int) -> float:
    """The server's peak once its resident size stops moving (three equal readings)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    readings: list[float] = []
    while len(readings) < 3 or len(set(readings[-3:])) > 1:
        assert time.monotonic() < deadline, readings
        assert (await admin.request(PING))["t"] == PONG  # the server still answers others
        readings.append(round(rss_mib(pid)))
        await asyncio.sleep(POLL_INTERVAL_S)  # poll interval between real readings
    return peak_mib(pid)


def test_pipelined_requests_with_large_replies_do_not_grow_memory(
        start_server: Callable[..., ServerProcess]) -> None:
    server: ServerProcess = start_server()
    assert server.process is not None
    pid = server.process.pid

    async def scenario() -> None:
        admin = await RawClient.connect(server.port)
        await admin.register(name="admin")
        await admin.ok(ADDQUEUE, {"name": "big"})
        jid = (await admin.ok(ENQUEUE, {"q": "big", "job_payload": BIG_PAYLOAD}))["jid"]
        hoarder = await tight_client(server.port)
        await hoarder.register(name="hoarder")
        before = rss_mib(pid)
        rids = [f"j{i}" for i in range(JOB_REQUESTS)]
        await hoarder.send_raw(b"".join(  # in one write, so the server reads them at once
            frame({"v": 2, "t": JOB, "rid": rid, "p": {"jid": jid}}) for rid in rids))
        peak = await settled_peak(admin, pid)
        print(f"rss before {before:.0f} MiB, peak after {peak:.0f} MiB")
        assert peak - before < MAX_GROWTH_MIB, (before, peak)
        assert not server.events("slow_peer_dropped")
        for rid in rids[:3]:  # the peer is served as it reads
            reply = await hoarder.reply_to(rid, timeout=SETTLE_TIMEOUT_S)
            assert reply["t"] == OK and reply["p"]["jid"] == jid

    asyncio.run(scenario())


def flood(port: int, stop: threading.Event, sent: list[int]) -> None:
    """Register, then write ENQUEUEs as fast as the socket takes them, reading nothing."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    header = struct.Struct(">I")

    def read_reply() -> None:
        (length,) = header.unpack(sock.recv(4, socket.MSG_WAITALL))
        sock.recv(length, socket.MSG_WAITALL)

    sock.sendall(frame({"v": 2, "t": HELLO, "rid": "h", "p": {}}))
    read_reply()
    sock.sendall(frame({"v": 2, "t": REGISTER, "rid": "r", "p": {"name": "flood"}}))
    read_reply()
    chunk = b"".join(frame({"v": 2, "t": ENQUEUE, "rid": f"e{i}",
                            "p": {"q": "flood", "job_payload": {"n": i}}})
                     for i in range(1000))
    sock.settimeout(1.0)  # once the server stops reading, a send blocks: then stop
    deadline = time.monotonic() + FLOOD_SECONDS
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            sock.sendall(chunk)
            sent[0] += 1000
    except (TimeoutError, OSError):
        pass  # the server stopped reading this peer: what this test wants to see
    stop.wait(FLOOD_SECONDS * 3)
    sock.close()


def test_a_flooding_producer_neither_grows_memory_nor_stalls_others(
        start_server: Callable[..., ServerProcess]) -> None:
    server: ServerProcess = start_server()
    assert server.process is not None
    pid = server.process.pid

    async def scenario() -> None:
        admin = await RawClient.connect(server.port)
        await admin.register(name="admin")
        await admin.ok(ADDQUEUE, {"name": "flood"})
        await admin.ok(ADDQUEUE, {"name": "work"})
        worker = await RawClient.connect(server.port)
        await worker.register(name="worker")
        await worker.ok(SUBSCRIBE, {"q": "work", "credits": ROUNDS * 2})
        before = rss_mib(pid)
        stop, sent = threading.Event(), [0]
        thread = threading.Thread(target=flood, args=(server.port, stop, sent), daemon=True)
        thread.start()
        rounds: list[float] = []
        try:
            while not sent[0]:  # the flood is under way
                await asyncio.sleep(0.01)  # poll interval while the thread starts
            for index in range(ROUNDS):
                started = time.perf_counter()
                await admin.ok(ENQUEUE, {"q": "work", "job_payload": {"round": index}})
                quest = (await worker.next_push(QUEST))["p"]
                delivery = {"did": quest["did"], "jid": quest["jid"]}
                await worker.ok(ACK, delivery)
                await worker.ok(COMPLETE, delivery)
                rounds.append(time.perf_counter() - started)
            peak = await settled_peak(admin, pid)
        finally:
            stop.set()
            thread.join()
        print(f"flood sent {sent[0]} requests; rss before {before:.0f} MiB, peak "
              f"{peak:.0f} MiB; rounds median {statistics.median(rounds) * 1000:.1f} ms, "
              f"max {max(rounds) * 1000:.1f} ms")
        assert peak - before < MAX_GROWTH_MIB, (before, peak)
        assert statistics.median(rounds) < MEDIAN_ROUND_S, rounds
        assert max(rounds) < MAX_ROUND_S, rounds

    asyncio.run(scenario())
