"""The concurrency limit under stress (PROTOCOL.md section 6, "Concurrency limit").

Twelve worker connections in one event loop share a queue whose `concurrency_limit` is 3.
The limit is checked three ways:

- the workers count, in a counter shared by all of them, the jobs they hold: +1 when a
  QUEST arrives, -1 just before the outcome is sent (or the socket closed). A worker counts
  a job only while the server does too (the server frees a slot once the outcome or the
  disconnect reaches it), so the counter never exceeds the server's count: above 3, the
  server had more than 3 jobs out. (Not with lease expiries: the server frees those slots
  on its own, before any worker can know.)
- QSTATS, sampled all along: `concurrency.active` and `stats.active`.
- afterwards, every delivery of every job from its history, `started_at` (when the slot
  was taken) to `ended_at` (when it was freed), on the server's clock: at no millisecond
  do more than 3 overlap (a start and an end in the same millisecond count as end first,
  so this never reports an overlap that did not happen).
"""

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tests.support.postgres import storage_engine  # noqa: F401  (both engines)
from tests.support.server_process import ServerProcess
from tests.support.shared_connection import SharedConnection

SUBSCRIBE, CREDIT, ADDQUEUE, ENQUEUE, JOB, QSTATS = 6, 8, 9, 14, 15, 18
ACK, COMPLETE = 19, 20
OK, ERR, QUEST = 101, 102, 106

LIMIT = 3
WORKERS = 12
CREDITS = 5
STATUSES = ("new", "waiting", "delayed", "active", "completed", "failed", "cancelled")
REPLY_TIMEOUT_S = 20.0
# Bound for a whole run; a healthy run takes a few seconds even on a loaded machine.
RUN_TIMEOUT_S = 90.0


@dataclass
class Tally:
    """What the workers saw, shared by all of them."""

    active: int = 0
    max_active: int = 0
    quests: Counter[str] = field(default_factory=Counter)
    completed: Counter[str] = field(default_factory=Counter)
    stale: int = 0
    disconnects: int = 0
    max_server_active: int = 0
    max_server_stats_active: int = 0

    def take(self) -> None:
        self.active += 1
        self.max_active = max(self.max_active, self.active)

    def give_back(self) -> None:
        self.active -= 1
        assert self.active >= 0


async def enqueue_pipelined(conn: SharedConnection, queue: str, count: int) -> list[str]:
    """`count` ENQUEUEs sent back to back; their job ids once every OK is in."""
    replies = await asyncio.gather(*(conn.request(ENQUEUE, {"q": queue, "job_payload": n})
                                     for n in range(count)))
    assert all(reply["t"] == OK for reply in replies), replies
    return [reply["p"]["jid"] for reply in replies]


async def sample_until_done(conn: SharedConnection, queue: str, total: int, tally: Tally
                            ) -> dict[str, Any]:
    """QSTATS, each reply awaited, until `total` jobs are completed; the last reply.

    Every reply's dispatch picture must show at most LIMIT slots in use."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        reply = await conn.ok(QSTATS, {"q": queue})
        assert reply["concurrency"]["limit"] == LIMIT
        tally.max_server_active = max(tally.max_server_active, reply["concurrency"]["active"])
        tally.max_server_stats_active = max(tally.max_server_stats_active,
                                            reply["stats"]["active"])
        assert reply["concurrency"]["active"] <= LIMIT, reply
        assert reply["stats"]["active"] <= LIMIT, reply
        if reply["stats"]["completed"] >= total:
            return reply
        assert time.monotonic() < deadline, f"run did not finish: {reply}"


async def handle(conn: SharedConnection, quest: dict[str, Any], tally: Tally, held: set[str],
                 abort: bool = False, ack_then_abort: bool = False) -> None:
    """ACK, simulated work, outcome, one credit back; or close abruptly while holding."""
    did, jid = quest["did"], quest["jid"]
    tally.quests[jid] += 1
    tally.take()
    held.add(did)
    try:
        if abort and not ack_then_abort:
            give_back_all(conn, tally, held)
            return
        ack = await conn.request(ACK, {"did": did, "jid": jid})
        assert ack["t"] == OK or ack["p"]["code"] == "DELIVERY_STALE", ack
        # Simulated work, not synchronisation.
        await asyncio.sleep(random.uniform(0, 0.003))
        if abort:
            give_back_all(conn, tally, held)
            return
        if did in held:
            held.discard(did)
            tally.give_back()
        reply = await conn.request(COMPLETE, {"did": did, "jid": jid, "result": jid})
        if reply["t"] == OK:
            tally.completed[jid] += 1
        else:
            # Only a delivery the server already ended (lease expiry) may be refused.
            assert reply["p"]["code"] == "DELIVERY_STALE", reply
            tally.stale += 1
        await conn.ok(CREDIT, {"sid": quest["sid"], "credits": 1})
    except ConnectionError:
        if did in held:
            held.discard(did)
            tally.give_back()


def give_back_all(conn: SharedConnection, tally: Tally, held: set[str]) -> None:
    """Count the held jobs as given back, then drop the connection without a word."""
    for _ in held:
        tally.give_back()
    held.clear()
    tally.disconnects += 1
    conn.abort()


async def next_quest(conn: SharedConnection, done: asyncio.Event
                     ) -> tuple[bool, dict[str, Any] | None]:
    """(True, None) once `done` is set first; else (False, the next QUEST, or None once
    the connection is gone)."""
    getter = asyncio.ensure_future(conn.quests.get())
    stopper = asyncio.ensure_future(done.wait())
    await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if not getter.done():
        getter.cancel()
        return True, None
    return False, getter.result()


async def run_worker(port: int, queue: str, name: str, tally: Tally, done: asyncio.Event,
                     chaos: Callable[[], str | None] | None = None) -> None:
    """Serve QUESTs until `done`; with `chaos`, sometimes drop the connection mid-job
    ("abort" before the ACK, "ack_abort" after it) and come back on a new one."""
    while not done.is_set():
        conn = await SharedConnection.open(port, name)
        await conn.ok(SUBSCRIBE, {"q": queue, "credits": CREDITS})
        held: set[str] = set()
        tasks: set[asyncio.Task[None]] = set()
        while True:
            stopped, quest = await next_quest(conn, done)
            if stopped or quest is None:  # done, or this connection is gone
                break
            action = chaos() if chaos is not None else None
            task = asyncio.create_task(handle(conn, quest, tally, held,
                                              abort=action is not None,
                                              ack_then_abort=action == "ack_abort"))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if action is not None:
                await task
                break
        await asyncio.gather(*tasks)
        await conn.close()


async def run_stress(port: int, queue: str, config: dict[str, Any], total: int,
                     chaos: Callable[[], str | None] | None = None,
                     extra: Callable[[asyncio.Event, Tally], Any] | None = None
                     ) -> tuple[Tally, SharedConnection, list[str], dict[str, Any]]:
    """Twelve workers (and `extra`, one more subscriber) against `total` jobs enqueued in
    one pipelined burst; returns when QSTATS shows them all completed."""
    tally = Tally()
    control = await SharedConnection.open(port, "control")
    await control.ok(ADDQUEUE, {"name": queue, "config": {"concurrency_limit": LIMIT,
                                                          **config}})
    done = asyncio.Event()
    workers = [asyncio.create_task(run_worker(port, queue, f"w{n}", tally, done, chaos))
               for n in range(WORKERS)]
    extras = [asyncio.create_task(extra(done, tally))] if extra is not None else []
    # Every worker subscribed before the burst arrives.
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while (await control.ok(QSTATS, {"q": queue}))["subscriptions"] < WORKERS + len(extras):
        assert time.monotonic() < deadline
    sampler = asyncio.create_task(sample_until_done(control, queue, total, tally))
    jids = await enqueue_pipelined(control, queue, total)
    final = await sampler
    done.set()
    await asyncio.gather(*workers, *extras)
    assert tally.active == 0
    return tally, control, jids, final


def ms(text: str) -> int:
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def max_overlap(records: list[dict[str, Any]]) -> int:
    """The most deliveries out at once, from every job's history (server clock)."""
    events = []
    for record in records:
        for entry in record["history"]:
            events.append((ms(entry["started_at"]), 1))
            events.append((ms(entry["ended_at"]), -1))
    events.sort()  # at the same millisecond, ends (-1) before starts (+1)
    out = peak = 0
    for _, change in events:
        out += change
        peak = max(peak, out)
    assert out == 0
    return peak


async def assert_all_completed_once(control: SharedConnection, queue: str, jids: list[str]
                                    ) -> list[dict[str, Any]]:
    """Every job completed exactly once, nothing lost, the counters agree, and no more
    than LIMIT deliveries ever overlapped; the job records."""
    records = await asyncio.gather(*(control.ok(JOB, {"jid": jid}) for jid in jids))
    for jid, record in zip(jids, records, strict=True):
        assert record.get("jid") == jid, (jid, record)  # no job lost
        assert record["status"] == "completed", record
        assert record["result"] == jid
        outcomes = [entry["outcome"] for entry in record["history"]]
        assert outcomes.count("completed") == 1, record
        assert outcomes[-1] == "completed", record
    reply = await control.ok(QSTATS, {"q": queue})
    assert reply["stats"] == {**dict.fromkeys(STATUSES, 0), "completed": len(jids)}
    assert reply["concurrency"] == {"active": 0, "limit": LIMIT}
    overlap = max_overlap(records)
    assert overlap <= LIMIT
    # The limit was actually reached, so the bound above is a real test.
    assert overlap >= 2
    return records


def test_concurrency_limit_holds_under_stress(server: ServerProcess) -> None:
    total = 300

    async def scenario() -> None:
        tally, control, jids, final = await run_stress(server.port, "stress", {}, total)
        assert len(set(jids)) == total
        assert tally.max_active <= LIMIT
        assert tally.max_server_active <= LIMIT
        # The limit was actually reached, so the bound above is a real test.
        assert tally.max_active >= 2 and tally.max_server_active >= 2
        # Each job delivered once and completed once.
        assert set(tally.quests) == set(jids) and max(tally.quests.values()) == 1
        assert set(tally.completed) == set(jids) and max(tally.completed.values()) == 1
        assert tally.stale == 0
        assert final["stats"]["completed"] == total
        await assert_all_completed_once(control, "stress", jids)
        await control.close()

    asyncio.run(scenario())


def test_concurrency_limit_holds_with_abrupt_disconnects(server: ServerProcess) -> None:
    total = 200
    rng = random.Random(20260504)
    budget = {"left": 24}

    def chaos() -> str | None:
        if budget["left"] > 0 and rng.random() < 0.12:
            budget["left"] -= 1
            return rng.choice(("abort", "ack_abort"))
        return None

    async def scenario() -> None:
        # Disconnects after an ACK use attempts: plenty of them, retried at once.
        config = {"max_attempts": 1000, "retry_interval_ms": 1}
        tally, control, jids, _ = await run_stress(server.port, "chaos", config, total, chaos)
        assert tally.max_active <= LIMIT
        assert tally.max_server_active <= LIMIT
        assert tally.disconnects >= 5
        # Jobs held by a dropped connection came back and were delivered again.
        assert max(tally.quests.values()) >= 2
        records = await assert_all_completed_once(control, "chaos", jids)
        seen = Counter(entry["outcome"] for record in records for entry in record["history"])
        assert seen["withdrawn"] + seen["disconnected"] >= 1, seen
        await control.close()

    asyncio.run(scenario())


def test_concurrency_limit_holds_with_lease_expiries(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--heartbeat.interval_ms", "100")
    total = 80

    async def hoarder(done: asyncio.Event, tally: Tally) -> None:
        """ACKs every job it gets and never finishes one: its leases expire."""
        conn = await SharedConnection.open(server.port, "hoarder")
        await conn.ok(SUBSCRIBE, {"q": "leases", "credits": CREDITS})
        hoarded: list[dict[str, Any]] = []

        for _ in range(CREDITS):
            stopped, quest = await next_quest(conn, done)
            if stopped:
                break
            assert quest is not None
            tally.quests[quest["jid"]] += 1
            ref = {"did": quest["did"], "jid": quest["jid"]}
            hoarded.append(ref)
            await conn.ok(ACK, ref)
        await done.wait()
        # Its deliveries all ended without it (and the jobs were done by others): a late
        # outcome is refused as stale and changes nothing.
        assert hoarded
        for ref in hoarded:
            reply = await conn.request(COMPLETE, ref)
            assert reply["t"] == ERR and reply["p"]["code"] == "DELIVERY_STALE", reply
            record = await conn.ok(JOB, {"jid": ref["jid"]})
            assert record["status"] == "completed"
            expired = [e for e in record["history"] if e["delivery_id"] == ref["did"]]
            assert [e["outcome"] for e in expired] == ["lease_expired"], record
        await conn.close()

    async def scenario() -> None:
        config = {"lease_ms": 300, "max_attempts": 1000, "retry_interval_ms": 1}
        tally, control, jids, _ = await run_stress(server.port, "leases", config, total,
                                                   extra=hoarder)
        assert tally.max_server_active <= LIMIT
        records = await assert_all_completed_once(control, "leases", jids)
        expired = [r for r in records
                   if any(e["outcome"] == "lease_expired" for e in r["history"])]
        assert len(expired) >= 1  # the hoarder's jobs expired and were done by others
        for record in expired:
            entry = next(e for e in record["history"] if e["outcome"] == "lease_expired")
            assert entry["counted"] is True
        await control.close()

    asyncio.run(scenario())
