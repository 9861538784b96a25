"""Connection lifecycle and wire hygiene against a real server process.

HELLO/REGISTER ordering, the IDENT flow driven by the heartbeat, PING, framing and envelope
errors, the connection limit, and the rule that one bad connection never harms another.
"""

import asyncio
import re
import struct
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgpack

from tests.support.raw_client import RawClient, frame
from tests.support.server_process import ServerProcess

HELLO, REGISTER, PING, QUEUE, LSQUEUE, ADDQUEUE, STATUS, ENQUEUE, JOB = 1, 2, 3, 4, 5, 9, 10, 14, 15
OK, ERR, HI, IDENT, PONG = 101, 102, 103, 104, 105

RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
# How long a closed connection may take to show as closed; never waited out on success.
CLOSE_TIMEOUT_S = 5.0


def parse_time(text: Any) -> datetime:
    assert type(text) is str and RFC3339.fullmatch(text), text
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def envelope(t: Any, rid: Any = "r1", p: Any = None, v: Any = 2) -> dict[str, Any]:
    return {"v": v, "t": t, "rid": rid, "p": {} if p is None else p}


async def worker(port: int, **metadata: Any) -> RawClient:
    client = await RawClient.connect(port)
    await client.register(**metadata)
    return client


async def expect_error_and_close(client: RawClient, code: str, rid: str) -> dict[str, Any]:
    """The next frame is ERR `code` echoing `rid`, and then the server closes."""
    message = await client.read_frame()
    assert message is not None, f"closed without ERR {code}"
    assert message["t"] == ERR, message
    assert message["p"]["code"] == code, message
    assert message["rid"] == rid, message
    assert await client.read_frame(CLOSE_TIMEOUT_S) is None
    return message


async def assert_pings(client: RawClient) -> None:
    reply = await client.request(PING)
    assert reply["t"] == PONG, reply


def test_hello_register_ping(server: ServerProcess) -> None:
    async def scenario() -> None:
        client = await RawClient.connect(server.port)
        # Unknown extra envelope keys are ignored; the HELLO payload is ignored too.
        await client.send_raw(frame({**envelope(HELLO, "hello-1", {"anything": "x"}),
                                     "extra": "ignored"}))
        hi = await client.read_frame()
        assert hi == {"v": 2, "t": HI, "rid": "hello-1", "p": {}}

        reply = await client.reply_to(await client.send(REGISTER, {}, rid="reg-7"))
        assert reply["t"] == OK and reply["rid"] == "reg-7", reply
        wid = reply["p"]["wid"]
        assert str(uuid.UUID(wid)) == wid

        before = datetime.now(UTC)
        pong = await client.reply_to(await client.send(PING, {}, rid="ping-42"))
        after = datetime.now(UTC)
        assert pong["t"] == PONG and pong["rid"] == "ping-42", pong
        server_time = parse_time(pong["p"]["server_time"])
        assert before.timestamp() - 1 <= server_time.timestamp() <= after.timestamp() + 1

        # The worker is now allowed ordinary requests.
        queues = await client.ok(LSQUEUE)
        assert "_system" in [q["name"] for q in queues["queues"]]
        await client.close()

    asyncio.run(scenario())


def test_ping_is_answered_before_pending_replies(server: ServerProcess) -> None:
    async def scenario() -> None:
        client = await worker(server.port)
        await client.ok(ADDQUEUE, {"name": "pq"})
        # ENQUEUE waits for its commit; a PING sent right behind it is answered first.
        await client.send_raw(frame(envelope(ENQUEUE, "enq", {"q": "pq"}))
                              + frame(envelope(PING, "ping")))
        first = await client.read_frame()
        second = await client.read_frame()
        assert first is not None and second is not None
        assert (first["t"], first["rid"]) == (PONG, "ping"), first
        assert (second["t"], second["rid"]) == (OK, "enq"), second
        assert second["p"]["jid"].startswith("pq:")

    asyncio.run(scenario())


def test_session_order_violations_close_only_the_offender(server: ServerProcess) -> None:
    async def scenario() -> None:
        bystander = await worker(server.port, name="bystander")

        # The first message must be HELLO.
        for message_type in (REGISTER, PING, QUEUE, STATUS, ENQUEUE):
            client = await RawClient.connect(server.port)
            await client.send(message_type, {"q": "x"}, rid=f"first-{message_type}")
            await expect_error_and_close(client, "PROTOCOL_VIOLATION", f"first-{message_type}")
            await assert_pings(bystander)

        # After HELLO only REGISTER is allowed: HELLO twice, PING, anything else.
        for message_type in (HELLO, PING, QUEUE, LSQUEUE, ADDQUEUE, STATUS):
            client = await RawClient.connect(server.port)
            assert (await client.request(HELLO))["t"] == HI
            await client.send(message_type, {"name": "x"}, rid=f"helloed-{message_type}")
            await expect_error_and_close(client, "PROTOCOL_VIOLATION", f"helloed-{message_type}")
            await assert_pings(bystander)

        # A registered worker may not HELLO or REGISTER again.
        for message_type in (HELLO, REGISTER):
            client = await worker(server.port)
            await client.send(message_type, {}, rid=f"again-{message_type}")
            await expect_error_and_close(client, "PROTOCOL_VIOLATION", f"again-{message_type}")
            await assert_pings(bystander)

        # None of those attempts left a worker behind: only the bystander is registered.
        status = await bystander.ok(STATUS)
        workers = status["pools"]["worker_list"]
        assert [w["metadata"] for w in workers] == [{"name": "bystander"}]

    asyncio.run(scenario())


def test_register_metadata_shows_in_status(server: ServerProcess) -> None:
    async def scenario() -> None:
        labels = {"region": "eu-west", "tier": "gpu"}
        first = await RawClient.connect(server.port)
        first_wid = await first.register(name="resizer-1", host="build-07", pid=4242,
                                         labels=labels)
        second = await RawClient.connect(server.port)
        second_wid = await second.register()
        anonymous = await RawClient.connect(server.port)
        assert (await anonymous.request(HELLO))["t"] == HI

        status = await first.ok(STATUS)
        pools = status["pools"]
        by_wid = {w["wid"]: w for w in pools["worker_list"]}
        assert set(by_wid) == {first_wid, second_wid}
        assert by_wid[first_wid]["metadata"] == {"name": "resizer-1", "host": "build-07",
                                                 "pid": 4242, "labels": labels}
        assert by_wid[second_wid]["metadata"] == {}
        assert pools["workers"] == 2
        assert pools["anonymous"] == 1
        parse_time(by_wid[first_wid]["registered_at"])

        # A worker that disconnects leaves the list.
        await second.close()
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        while True:
            pools = (await first.ok(STATUS))["pools"]
            if [w["wid"] for w in pools["worker_list"]] == [first_wid]:
                break
            assert time.monotonic() < deadline, pools
        assert pools["workers"] == 1

    asyncio.run(scenario())


def test_invalid_register_metadata_answers_err_and_closes(server: ServerProcess) -> None:
    async def scenario() -> None:
        bystander = await worker(server.port)
        invalid: list[dict[str, Any]] = [
            {"name": 7},
            {"name": ""},
            {"name": "n" * 257},
            {"host": ["build-07"]},
            {"pid": -1},
            {"pid": "4242"},
            {"labels": ["a", "b"]},
            {"labels": {"tier": 1}},
            {"labels": {"tier": "x" * 257}},
            {"labels": {f"k{i}": "v" for i in range(33)}},
        ]
        for index, metadata in enumerate(invalid):
            client = await RawClient.connect(server.port)
            assert (await client.request(HELLO))["t"] == HI
            rid = f"bad-{index}"
            await client.send(REGISTER, metadata, rid=rid)
            await expect_error_and_close(client, "INVALID_PAYLOAD", rid)
        await assert_pings(bystander)
        assert (await bystander.ok(STATUS))["pools"]["workers"] == 1

        # The limits themselves are allowed.
        edge = await RawClient.connect(server.port)
        wid = await edge.register(name="n" * 256, pid=0,
                                  labels={f"k{i}": "v" * 256 for i in range(32)})
        assert str(uuid.UUID(wid)) == wid

    asyncio.run(scenario())


def test_anonymous_lifecycle_is_enforced_by_the_heartbeat(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(
        "--wire.session.unhelloed_max_lifetime_seconds", "1",
        "--wire.session.helloed_unregistered_max_lifetime_seconds", "1",
        "--wire.session.ident_register_timeout_seconds", "1",
        "--heartbeat.interval_ms", "100",
    )

    async def wait_for_ident(client: RawClient) -> tuple[dict[str, Any], float]:
        hello_sent = time.time()
        assert (await client.request(HELLO))["t"] == HI
        helloed = time.monotonic()
        ident = await client.read_frame(CLOSE_TIMEOUT_S)
        received = time.time()
        assert ident is not None and ident["t"] == IDENT, ident
        assert time.monotonic() - helloed >= 0.9
        assert ident["rid"] == "0"
        payload = ident["p"]
        assert type(payload["register_timeout_seconds"]) is int
        assert payload["register_timeout_seconds"] == 1
        # IDENT goes out no sooner than 1 s after HELLO; the deadline is 1 s after IDENT.
        deadline = parse_time(payload["reply_deadline"]).timestamp()
        assert hello_sent + 2.0 - 0.002 <= deadline <= received + 1.0 + 0.002
        return ident, deadline

    async def registers_after_ident() -> None:
        client = await RawClient.connect(server.port)
        await wait_for_ident(client)
        wid = (await client.ok(REGISTER, {"name": "late"}))["wid"]
        assert str(uuid.UUID(wid)) == wid
        await assert_pings(client)
        # Registered: no further IDENT or timeout; the connection keeps working.
        for _ in range(3):
            await assert_pings(client)
        status = await client.ok(STATUS)
        assert wid in [w["wid"] for w in status["pools"]["worker_list"]]

    async def silent_after_ident() -> None:
        client = await RawClient.connect(server.port)
        _, deadline = await wait_for_ident(client)
        message = await expect_error_and_close(client, "REGISTER_TIMEOUT", "0")
        assert message["p"]["msg"]
        assert time.time() >= deadline - 0.002

    async def never_says_hello() -> None:
        started = time.monotonic()
        client = await RawClient.connect(server.port)
        assert await client.read_frame(CLOSE_TIMEOUT_S) is None
        assert time.monotonic() - started >= 0.9

    async def scenario() -> None:
        await asyncio.gather(registers_after_ident(), silent_after_ident(), never_says_hello())

    asyncio.run(scenario())
    assert len(server.events("ident_sent")) == 2
    assert len(server.events("unhelloed_connection_closed")) == 1


def test_framing_and_envelope_errors(start_server: Callable[..., ServerProcess]) -> None:
    max_size = 65536
    server = start_server("--wire.max_envelope_size_bytes", str(max_size))

    async def scenario() -> None:
        bystander = await worker(server.port, name="bystander")
        stalled = await worker(server.port, name="stalled")
        # A peer stuck half way through a frame holds no one else up.
        await stalled.send_raw(struct.pack(">I", 1000) + b"\x84\xa1v\x02")

        cases: list[tuple[bytes, str, str]] = [
            (struct.pack(">I", 0), "FRAME_EMPTY", "0"),
            (struct.pack(">I", max_size + 1), "FRAME_TOO_LARGE", "0"),
            (struct.pack(">I", 2**32 - 1), "FRAME_TOO_LARGE", "0"),
            (struct.pack(">I", 1) + b"\xc1", "MALFORMED", "0"),
            (struct.pack(">I", 3) + b"\x82\xa1v", "MALFORMED", "0"),
            (frame(envelope(HELLO, "f1", {"ratio": 1.5})), "MALFORMED", "f1"),
            (frame(envelope(HELLO, "f2", {"deep": [{"x": [0.25]}]})), "MALFORMED", "f2"),
            (frame(envelope(HELLO, "f3", {"big": 2**63})), "MALFORMED", "f3"),
            (frame(envelope(HELLO, "f4", {"ext": msgpack.ExtType(5, b"x")})), "MALFORMED",
             "0"),
            (frame(envelope(HELLO, "v1", v=1)), "UNSUPPORTED_VERSION", "v1"),
            (frame(envelope(HELLO, "v3", v=3)), "UNSUPPORTED_VERSION", "v3"),
            (frame(envelope(99, "unknown-99")), "UNKNOWN_TYPE", "unknown-99"),
            (frame(envelope(OK, "server-type")), "UNKNOWN_TYPE", "server-type"),
            (frame(envelope(0, "zero")), "UNKNOWN_TYPE", "zero"),
            (frame([2, 1, "r", {}]), "BAD_ENVELOPE", "0"),
            (frame(envelope(HELLO, "")), "BAD_ENVELOPE", "0"),
            (frame(envelope(HELLO, 5)), "BAD_ENVELOPE", "0"),
            (frame(envelope(HELLO, "p", p=[1])), "BAD_ENVELOPE", "p"),
            (frame(envelope(HELLO, "v", v=2.0)), "MALFORMED", "v"),
            (frame(envelope(HELLO, "vs", v="2")), "BAD_ENVELOPE", "vs"),
        ]
        for data, code, rid in cases:
            client = await RawClient.connect(server.port)
            await client.send_raw(data)
            await expect_error_and_close(client, code, rid)
            await assert_pings(bystander)

        # The same errors close a registered worker's connection, and only that one.
        offender = await worker(server.port, name="offender")
        await offender.send_raw(frame(envelope(PING, "float", {"x": 0.5})))
        await expect_error_and_close(offender, "MALFORMED", "float")
        await assert_pings(bystander)
        workers = (await bystander.ok(STATUS))["pools"]["worker_list"]
        assert sorted(w["metadata"]["name"] for w in workers) == ["bystander", "stalled"]

        # A frame of exactly the maximum size passes framing; its job payload is then over
        # the payload bound (the QUEST carrying it must fit in a frame too): a plain ERR,
        # and the connection stays open.
        await bystander.ok(ADDQUEUE, {"name": "big"})
        filler = 0
        document = envelope(ENQUEUE, "big", {"q": "big", "job_payload": {"f": 0.5, "b": b""}})
        while len(msgpack.packb(document, use_bin_type=True)) < max_size:
            filler += 1
            document["p"]["job_payload"]["b"] = b"x" * filler
        assert len(msgpack.packb(document, use_bin_type=True)) == max_size
        await bystander.send_raw(frame(document))
        refusal = await bystander.reply_to("big")
        assert refusal["t"] == ERR and refusal["p"]["code"] == "PAYLOAD_TOO_LARGE", refusal
        # A job payload of exactly the bound is accepted, floats inside it too.
        payload = {"f": 0.5, "b": b""}
        bound = max_size - 4096
        filler = bound - len(msgpack.packb(payload, use_bin_type=True))
        payload["b"] = b"x" * filler
        while len(msgpack.packb(payload, use_bin_type=True)) > bound:
            filler -= 1
            payload["b"] = b"x" * filler
        assert len(msgpack.packb(payload, use_bin_type=True)) == bound
        jid = (await bystander.ok(ENQUEUE, {"q": "big", "job_payload": payload}))["jid"]
        job = await bystander.ok(JOB, {"jid": jid})
        assert job["payload"] == payload

    asyncio.run(scenario())


def test_connection_limit_refuses_extra_connections(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--server.max_connections", "2")

    async def scenario() -> None:
        first = await worker(server.port, name="first")
        second = await RawClient.connect(server.port)
        assert (await second.request(HELLO))["t"] == HI

        third = await RawClient.connect(server.port)
        await expect_error_and_close(third, "TOO_MANY_CONNECTIONS", "0")

        await assert_pings(first)
        assert (await second.ok(REGISTER, {"name": "second"}))["wid"]
        await assert_pings(second)
        assert (await first.ok(STATUS))["pools"]["connections"] == 2

        # A freed slot can be used again.
        await second.close()
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        while (await first.ok(STATUS))["pools"]["connections"] != 1:
            assert time.monotonic() < deadline
        fourth = await worker(server.port, name="fourth")
        await assert_pings(fourth)
        await assert_pings(first)

    asyncio.run(scenario())
    assert len(server.events("connection_refused")) == 1
