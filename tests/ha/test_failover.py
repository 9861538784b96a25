"""Brokers on an HA PostgreSQL (3 etcd, 3 Patroni nodes in synchronous mode:
`tests/support/patroni.py`) while the database fails under it (issue 18, "Kill an engine
node"). Run with `-m ha` (the default run leaves them out; .ci/run runs them once).

- Three brokers in cluster mode on the HA database: a queue's owner killed mid-job, another
  takes the queue over, the running jobs re-attach, the limit holds, every job completes
  once (the takeover test of tests/integration/test_cluster.py).
- Killing the primary (its Patroni and its PostgreSQL, SIGKILL) while producers enqueue and
  workers complete: the broker answers STORAGE_UNAVAILABLE, or keeps working, during the
  failover and carries on after it with no restart; every job whose ENQUEUE got OK is
  there afterwards and is completed exactly once (one QUEST, one COMPLETE answered OK, one
  `completed` in its history); no connection closes, nothing answers INTERNAL.
- Losing etcd's quorum (2 of 3 members stopped): Patroni demotes the primary, and the broker
  answers writes and reads with STORAGE_UNAVAILABLE within a bounded time, keeps every
  connection open, and takes writes again once etcd is back.

The time each took is printed (CI's log shows it). Nothing is mocked: real etcd, Patroni,
PostgreSQL, broker and sockets.
"""

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import Cluster, take_over_a_killed_owner
from tests.support.patroni import PatroniCluster, patroni_cluster, wait_until
from tests.support.server_process import ServerProcess
from tests.support.shared_connection import REPLY_TIMEOUT_S, SharedConnection

__all__ = ["patroni_cluster"]  # a fixture, one cluster for the module

pytestmark = pytest.mark.ha

PING, SUBSCRIBE, CREDIT, ADDQUEUE, ENQUEUE, JOB, QSTATS = 3, 6, 8, 9, 14, 15, 18
ACK, COMPLETE = 19, 20
OK, ERR, PONG = 101, 102, 105
UNAVAILABLE = "STORAGE_UNAVAILABLE"

PRODUCERS = 2
WORKERS = 2
CREDITS = 4
BEFORE_KILL = 60  # jobs completed before the primary is killed: the run is under way
AFTER_RECOVERY = 40  # jobs enqueued OK after the failover, to show the broker carries on
# Bounds, not expectations: a failover is about 10 s (Patroni's ttl) plus the in-doubt
# look-up's 15 s at worst; losing quorum demotes within about 4 s (loop_wait +
# retry_timeout); a loaded CI machine gets room on top.
RECOVERY_TIMEOUT_S = 90.0
# The longest any one request may wait for its answer (SharedConnection's bound): above the
# in-doubt look-up's 15 s, which holds the writes queued behind it.
REPLY_BOUND_S = REPLY_TIMEOUT_S
DRAIN_TIMEOUT_S = 90.0
PAUSE_AFTER_ERR_S = 0.1  # a client's pause before it tries again, as the SDK's would


# A broker in cluster mode holds its queues for this long without renewing: longer than a
# failover (about 10 s) and the in-doubt look-up, so the queue stays where it is.
CLUSTER_LEASE_MS = 40_000


@pytest.fixture
def broker(patroni_cluster: PatroniCluster, tmp_path: Path, request: pytest.FixtureRequest
           ) -> Iterator[ServerProcess]:
    """A broker on a fresh database of the cluster, through the multi-host DSN: a lone one,
    or (parameter "cluster") one in cluster mode, whose renewals and fenced commits go
    through the failover too."""
    mode = getattr(request, "param", "lone")
    dsn = patroni_cluster.new_database(f"ha_{mode}_{request.node.name[5:25]}")
    extra = ([] if mode == "lone" else
             ["--cluster.node_id", "ha-1", "--cluster.lease_ms", str(CLUSTER_LEASE_MS),
              "--cluster.renew_ms", "1000"])
    server = ServerProcess(tmp_path / "data", [
        "--storage.engine", "postgres", "--storage.postgres.dsn", dsn, *extra]).start()
    yield server
    server.stop()


@dataclass
class Ledger:
    """What the clients saw."""

    enqueued: list[str] = field(default_factory=list)  # jids answered OK
    quests: dict[str, list[str]] = field(default_factory=dict)  # jid -> dids received
    completed: dict[str, list[str]] = field(default_factory=dict)  # jid -> dids OK'd
    refused: dict[str, int] = field(default_factory=dict)  # ERR code -> how many
    messages: set[str] = field(default_factory=set)  # the STORAGE_UNAVAILABLE messages
    first_refused_at: float | None = None
    enqueued_at: list[float] = field(default_factory=list)  # monotonic time of each OK

    def refusal(self, reply: dict[str, Any]) -> None:
        code = reply["p"]["code"]
        self.refused[code] = self.refused.get(code, 0) + 1
        self.messages.add(reply["p"]["msg"])
        if self.first_refused_at is None:
            self.first_refused_at = time.monotonic()


async def _answered(conn: SharedConnection, message: int, payload: dict[str, Any]
                    ) -> dict[str, Any]:
    """The reply, which must come within REPLY_BOUND_S (never a hang: `request` raises
    TimeoutError past it)."""
    return await conn.request(message, payload)


async def _produce(port: int, name: str, ledger: Ledger, stop: asyncio.Event) -> None:
    """ENQUEUE one job after another until `stop`; an ERR is noted and the job sent again
    (as a new job: a refused ENQUEUE stored nothing) after a pause."""
    conn = await SharedConnection.open(port, name)
    try:
        n = 0
        while not stop.is_set():
            reply = await _answered(conn, ENQUEUE, {"q": "ha", "job_payload": [name, n]})
            if reply["t"] == OK:
                ledger.enqueued.append(reply["p"]["jid"])
                ledger.enqueued_at.append(time.monotonic())
                n += 1
            else:
                ledger.refusal(reply)
                await asyncio.sleep(PAUSE_AFTER_ERR_S)
        assert not conn.closed
    finally:
        await conn.close()


async def _work(port: int, name: str, ledger: Ledger, stop: asyncio.Event) -> None:
    """ACK each job as it comes (as the SDK does: a job held unacknowledged past the ack
    timeout goes back), COMPLETE them one by one; a COMPLETE refused STORAGE_UNAVAILABLE
    is sent again after a pause (the delivery stays the worker's: PROTOCOL.md section 6)."""
    acks: list[asyncio.Task[dict[str, Any]]] = []

    def received(quest: dict[str, Any]) -> None:
        ledger.quests.setdefault(quest["jid"], []).append(quest["did"])
        acks.append(asyncio.ensure_future(conn.ok(ACK, {"did": quest["did"],
                                                        "jid": quest["jid"]})))

    conn = await SharedConnection.open(port, name, received)
    try:
        await conn.ok(SUBSCRIBE, {"q": "ha", "credits": CREDITS})
        while not stop.is_set():
            try:
                quest = await asyncio.wait_for(conn.quests.get(), PAUSE_AFTER_ERR_S * 5)
            except TimeoutError:
                continue
            assert quest is not None, "the broker closed a worker's connection"
            did, jid = quest["did"], quest["jid"]
            sent = list(acks)
            await asyncio.gather(*sent)  # each ACK answered OK (`ok` asserts it)
            del acks[:len(sent)]
            while True:
                reply = await _answered(conn, COMPLETE, {"did": did, "jid": jid})
                if reply["t"] == OK:
                    ledger.completed.setdefault(jid, []).append(did)
                    break
                ledger.refusal(reply)
                assert reply["p"]["code"] == UNAVAILABLE, reply
                await asyncio.sleep(PAUSE_AFTER_ERR_S)
            await conn.ok(CREDIT, {"sid": quest["sid"], "credits": 1})
        assert not conn.closed
    finally:
        await conn.close()


async def _until(what: str, check: Callable[[], bool], timeout_s: float) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout_s, f"{what}: not within {timeout_s} s"
        await asyncio.sleep(PAUSE_AFTER_ERR_S)
    return time.monotonic() - started


async def _check_every_job(conn: SharedConnection, ledger: Ledger) -> None:
    """Every job OK'd is stored and completed exactly once; the queue holds no other."""
    records = await asyncio.gather(*(conn.ok(JOB, {"jid": jid}) for jid in ledger.enqueued))
    for jid, record in zip(ledger.enqueued, records, strict=True):
        assert record.get("jid") == jid, (jid, record)  # not lost
        assert record["status"] == "completed", record
        outcomes = [entry["outcome"] for entry in record["history"]]
        assert outcomes == ["completed"], record  # one attempt, completed once
        assert len(ledger.quests[jid]) == 1, (jid, ledger.quests[jid])  # ran once
        assert ledger.completed[jid] == ledger.quests[jid], jid
    stats = (await conn.ok(QSTATS, {"q": "ha"}))["stats"]
    assert stats["completed"] == len(ledger.enqueued), stats
    assert sum(stats.values()) == stats["completed"], stats


def _in_doubt(broker: ServerProcess) -> str:
    """What the writer found of the commits cut while under way (its log)."""
    found = [event.get("landed") for event in broker.events("storage_commit_in_doubt")]
    return (f"commits cut mid-way: {len(found)} (landed: {found.count(True)}, "
            f"not: {found.count(False)}, unknown: {found.count(None)})")


def _report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f"\nha: {text}")


def test_three_brokers_on_the_ha_database_take_over_a_killed_broker(
        patroni_cluster: PatroniCluster, tmp_path: Path) -> None:
    """Cluster mode on the HA database (through its multi-host DSN): the plain-PostgreSQL
    takeover test (tests/integration/test_cluster.py) with three brokers. Runs first: it
    leaves the Patroni cluster whole."""
    brokers = Cluster(patroni_cluster.new_database("ha_three_brokers"), tmp_path)
    try:
        for node in "abc":
            brokers.start(node)
        asyncio.run(take_over_a_killed_owner(brokers))
    finally:
        brokers.stop_all()


# In cluster mode (a superset of a lone broker's path: the same writer, with the queue's
# fence and the membership round on top); the quorum test below runs a lone broker. The
# module's one Patroni cluster cannot lose a second primary (a killed node is not
# restarted), so this test runs once.
@pytest.mark.parametrize("broker", ["cluster"], indirect=True)
def test_killing_the_primary_loses_no_acknowledged_job_and_needs_no_restart(
        patroni_cluster: PatroniCluster, broker: ServerProcess,
        capsys: pytest.CaptureFixture[str]) -> None:
    ledger = Ledger()

    async def scenario() -> dict[str, float]:
        control = await SharedConnection.open(broker.port, "control")
        await control.ok(ADDQUEUE, {"name": "ha"})
        stop_producing, stop_working = asyncio.Event(), asyncio.Event()
        tasks = [asyncio.create_task(_produce(broker.port, f"p{n}", ledger, stop_producing))
                 for n in range(PRODUCERS)]
        tasks += [asyncio.create_task(_work(broker.port, f"w{n}", ledger, stop_working))
                  for n in range(WORKERS)]

        def watched(check: Callable[[], bool]) -> Callable[[], bool]:
            def both() -> bool:
                for task in tasks:  # a client that failed ends the test with its error
                    if task.done():
                        task.result()
                return check()
            return both

        await _until("jobs completed before the kill",
                     watched(lambda: len(ledger.completed) >= BEFORE_KILL), DRAIN_TIMEOUT_S)
        killed_node = await asyncio.to_thread(patroni_cluster.kill_primary)
        killed_at = time.monotonic()
        oks_at_kill = len(ledger.enqueued)
        promoted, failover_s = await asyncio.to_thread(
            patroni_cluster.wait_for_primary, other_than=killed_node)
        await _until("an ENQUEUE answered OK after the failover",
                     watched(lambda: any(at > killed_at + failover_s
                                         for at in ledger.enqueued_at[oks_at_kill:])),
                     RECOVERY_TIMEOUT_S)
        around = ledger.enqueued_at[max(0, oks_at_kill - 1):]
        outage_s = max(b - a for a, b in itertools.pairwise(around))
        recovered_with = len(ledger.enqueued)
        await _until("jobs enqueued after the failover",
                     watched(lambda: len(ledger.enqueued) >= recovered_with + AFTER_RECOVERY),
                     DRAIN_TIMEOUT_S)
        stop_producing.set()
        await asyncio.gather(*tasks[:PRODUCERS])
        await _until("every job completed",
                     watched(lambda: set(ledger.completed) >= set(ledger.enqueued)),
                     DRAIN_TIMEOUT_S)
        stop_working.set()
        await asyncio.gather(*tasks)
        assert (await _answered(control, PING, {}))["t"] == PONG
        await _check_every_job(control, ledger)
        await control.close()
        assert promoted is not killed_node
        return {"failover_s": failover_s, "outage_s": outage_s}

    times = asyncio.run(scenario())
    assert broker.process is not None and broker.process.poll() is None  # no restart
    assert set(ledger.refused) <= {UNAVAILABLE}, ledger.refused  # never INTERNAL
    for event in ("handler_failed", "request_failed", "storage_writer_lost",
                  "queue_let_go", "queue_lost"):  # in cluster mode, the queue stayed put
        assert not broker.events(event), broker.events(event)
    mode = "cluster mode" if broker.events("queue_claimed") else "lone broker"
    _report(capsys, f"primary killed ({mode}): Patroni promoted a standby in "
            f"{times['failover_s']:.1f} s; "
            f"the longest wait between two ENQUEUEs answered OK was {times['outage_s']:.1f} s; "
            f"{sum(ledger.refused.values())} requests answered {UNAVAILABLE} meanwhile; "
            f"{len(ledger.enqueued)} jobs enqueued, each completed once; "
            f"{_in_doubt(broker)}")


def test_losing_etcd_quorum_refuses_clearly_and_recovers(
        patroni_cluster: PatroniCluster, broker: ServerProcess,
        capsys: pytest.CaptureFixture[str]) -> None:
    ledger = Ledger()
    cluster = patroni_cluster

    async def scenario() -> dict[str, float]:
        client = await SharedConnection.open(broker.port, "client")
        await client.ok(ADDQUEUE, {"name": "ha"})
        for n in range(10):
            ledger.enqueued.append((await client.ok(ENQUEUE, {"q": "ha", "job_payload": n}))
                                   ["jid"])
        stopped = cluster.members[:2]
        for member in stopped:
            await asyncio.to_thread(cluster.stop_member, member)
        lost_at = time.monotonic()
        # Writes go on until Patroni demotes the primary, then are refused, each answered.
        while True:
            reply = await _answered(client, ENQUEUE, {"q": "ha", "job_payload": "during"})
            if reply["t"] == ERR:
                break
            ledger.enqueued.append(reply["p"]["jid"])
            assert time.monotonic() - lost_at < RECOVERY_TIMEOUT_S, "never refused"
            await asyncio.sleep(PAUSE_AFTER_ERR_S)
        refused_s = time.monotonic() - lost_at
        ledger.refusal(reply)
        # The first refusal comes as Patroni stops the primary; once it runs again as a
        # standby (every server read-only), while quorum stays lost: a write and two reads
        # refused, each answered, the connection open.
        await asyncio.to_thread(wait_until, "Patroni demoted the primary",
                                lambda: cluster.primary() is None, RECOVERY_TIMEOUT_S,
                                cluster.describe)
        for message, payload in ((ENQUEUE, {"q": "ha", "job_payload": "during"}),
                                 (QSTATS, {"q": "ha"}), (JOB, {"jid": ledger.enqueued[0]})):
            reply = await _answered(client, message, payload)
            assert reply["t"] == ERR, reply
            ledger.refusal(reply)
        assert (await _answered(client, PING, {}))["t"] == PONG
        for member in stopped:
            await asyncio.to_thread(cluster.start_member, member)
        back_at = time.monotonic()
        while True:
            reply = await _answered(client, ENQUEUE, {"q": "ha", "job_payload": "after"})
            if reply["t"] == OK:
                ledger.enqueued.append(reply["p"]["jid"])
                break
            ledger.refusal(reply)
            assert time.monotonic() - back_at < RECOVERY_TIMEOUT_S, reply
            await asyncio.sleep(PAUSE_AFTER_ERR_S)
        recovered_s = time.monotonic() - back_at
        stop = asyncio.Event()
        worker = asyncio.create_task(_work(broker.port, "w", ledger, stop))
        await _until("every job completed",
                     lambda: worker.done() or set(ledger.completed) >= set(ledger.enqueued),
                     DRAIN_TIMEOUT_S)
        stop.set()
        await worker
        await _check_every_job(client, ledger)
        assert not client.closed
        await client.close()
        return {"refused_s": refused_s, "recovered_s": recovered_s}

    times = asyncio.run(scenario())
    assert set(ledger.refused) == {UNAVAILABLE}, ledger.refused
    assert broker.process is not None and broker.process.poll() is None
    for event in ("handler_failed", "request_failed", "storage_writer_lost"):
        assert not broker.events(event), broker.events(event)
    _report(capsys, f"etcd quorum lost: writes refused {UNAVAILABLE} "
            f"{times['refused_s']:.1f} s after; first ENQUEUE answered OK "
            f"{times['recovered_s']:.1f} s after etcd came back; {_in_doubt(broker)}")
