"""Three real brokers in cluster mode on one real PostgreSQL database (docs/cluster.md):
queues spread over them, each queue's limit strict and its order FIFO, every acknowledged
job completed exactly once, also when the owner of a queue is killed (SIGKILL) or paused
(SIGSTOP) and another takes it over. Workers here speak the protocol's section 12 only
(tests/support/cluster.py), not the SDK.
"""

import asyncio
import signal
import time
from typing import Any

import pytest

from overhop.model.jobs import JobStatus
from tests.support.auth import add_users, scram_login
from tests.support.cluster import (
    Cluster,
    FollowingWorker,
    JobLog,
    cluster,
    owner_client,
    session,
    stored_jobs,
    take_over_a_killed_owner,
)
from tests.support.raw_client import RawClient

__all__ = ["cluster"]  # a fixture

ADDQUEUE, ENQUEUE, ENQUEUEMANY, LSQUEUE, QSTATS, ROUTES = 9, 14, 30, 5, 18, 50
SUBSCRIBE, ACK, COMPLETE, JOBBEAT, QUEST = 6, 19, 20, 22, 106


def test_queues_spread_and_each_keeps_its_limit_order_and_jobs(cluster: Cluster) -> None:
    queues = [f"q{i}" for i in range(5)]
    cluster.start("a")
    cluster.start("b")
    cluster.start("c")

    async def main() -> None:
        first = await session(cluster.brokers["a"].port)
        for name in queues:
            await first.ok(ADDQUEUE, {"name": name, "config": {"concurrency_limit": 2}})
        owners = cluster.wait_spread(set(queues) | {"_system"}, {"a", "b", "c"})
        expected = {name: cluster.address(node or "") for name, node in owners.items()}
        deadline = time.monotonic() + 10
        while (await first.ok(ROUTES))["queues"] != expected:  # a's view is a round behind
            assert time.monotonic() < deadline, "broker a never saw the spread"
            await asyncio.sleep(0.05)
        routes = (await first.ok(ROUTES))
        assert routes["node"] == "a" and set(routes["nodes"]) == {"a", "b", "c"}
        assert {name: routes["queues"][name] for name in queues} == {
            name: cluster.address(owners[name] or "") for name in queues}
        listed = (await first.ok(LSQUEUE))["queues"]  # every queue, each with its owner
        assert {q["name"]: q["owner"] for q in listed} == routes["queues"]
        assert len(listed) == 6
        # Another broker answers QUEUE_MOVED with the owner's address and changes nothing.
        for name in queues:
            elsewhere = next(node for node in "abc" if node != owners[name])
            other = await session(cluster.brokers[elsewhere].port)
            reply = await other.request(ENQUEUE, {"q": name, "job_payload": -1})
            assert reply["p"]["code"] == "QUEUE_MOVED"
            assert reply["p"]["details"] == {"q": name, "owner": cluster.address(owners[name]
                                                                                   or "")}
        enqueued: dict[str, list[str]] = {}
        for name in queues:
            producer = await owner_client(cluster, name)
            reply = await producer.ok(ENQUEUEMANY, {"q": name, "jobs": [
                {"job_payload": i} for i in range(12)]})
            enqueued[name] = reply["jids"]
        log = JobLog()
        workers = [FollowingWorker(cluster, name, 3, 0.02, log)
                   for name in queues for _ in range(2)]
        tasks = [asyncio.create_task(w.run()) for w in workers]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sum(
                a == ["OK"] for a in log.answers.values()) < 60:
            await asyncio.sleep(0.05)
        for worker in workers:
            await worker.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        for name in queues:
            assert log.max_overlap(name) <= 2, name
            assert [log.answers.get(jid) for jid in enqueued[name]] == [["OK"]] * 12
            # FIFO: the n-th job to start is the n-th enqueued, but for two started by
            # one dispatch, whose QUESTs race over two connections.
            started = sorted(enqueued[name], key=lambda jid: log.spans[jid][0])
            assert all(abs(started.index(jid) - n) <= 1
                       for n, jid in enumerate(enqueued[name])), name
            assert set(stored_jobs(cluster.dsn, name).values()) == {
                (int(JobStatus.COMPLETED), 1)}

    asyncio.run(main())


def test_a_killed_owner_is_taken_over_and_its_running_jobs_reattached(cluster: Cluster
                                                                        ) -> None:
    for node in "abc":
        cluster.start(node)
    asyncio.run(take_over_a_killed_owner(cluster))


def test_a_paused_owner_is_fenced_once_another_took_its_queue(cluster: Cluster) -> None:
    cluster.start("a")
    cluster.start("b")

    async def main() -> None:
        admin = await session(cluster.brokers["a"].port)
        await admin.ok(ADDQUEUE, {"name": "work"})
        cluster.wait_spread({"work", "_system"}, {"a", "b"})
        paused = cluster.owners()["work"]
        assert paused is not None
        other = "b" if paused == "a" else "a"
        stale = await session(cluster.brokers[paused].port)
        subscriber = await session(cluster.brokers[paused].port)
        await subscriber.ok(6, {"q": "work", "credits": 1})
        os_pid = cluster.brokers[paused].process
        assert os_pid is not None
        os_pid.send_signal(signal.SIGSTOP)
        try:
            cluster.wait_until(lambda: cluster.owners().get("work") == other, "a takeover")
            rid = await stale.send(ENQUEUE, {"q": "work", "job_payload": "late"})
            fresh = await session(cluster.brokers[other].port)
            await fresh.ok(ENQUEUE, {"q": "work", "job_payload": "on time"})
        finally:
            os_pid.send_signal(signal.SIGCONT)
        reply = await stale.reply_to(rid)
        assert reply["t"] == 102 and reply["p"]["code"] == "QUEUE_MOVED"
        assert reply["p"]["details"]["q"] == "work"
        pushes: list[dict[str, Any]] = []
        while not pushes:
            frame = await subscriber.read_frame()
            assert frame is not None
            if frame["t"] == 108:
                pushes.append(frame)
        assert pushes[0]["p"]["reason"] == "queue_moved"
        assert pushes[0]["p"]["owner"] in (None, cluster.address(other))
        stored = stored_jobs(cluster.dsn, "work")
        assert len(stored) == 1  # the late job was never written
        assert cluster.owners()["work"] == other

    asyncio.run(main())


def test_users_reach_every_broker_and_routes_name_only_the_users_queues(cluster: Cluster
                                                                        ) -> None:
    cluster.start("a")
    cluster.start("b")
    admin = ("root", "root-Pa55word-7c1")

    async def main() -> None:
        # Added through a: b learns of them within a round (the users live in the database).
        await add_users(cluster.brokers["a"], {admin[0]: (admin[1], ["admin", "manage",
                                                                      "read"]),
                                                "alice": ("alice-Pw-k9", ["produce:team-*",
                                                                    "read:team-a"])})
        root = await login_when_known(cluster.brokers["b"].port, *admin)
        for name in ("team-a", "team-b", "other"):
            await root.ok(ADDQUEUE, {"name": name})
        cluster.wait_spread({"team-a", "team-b", "other", "_system"}, {"a", "b"})
        alice = await login_when_known(cluster.brokers["a"].port, "alice", "alice-Pw-k9")
        deadline = time.monotonic() + 10
        while set((routes := await alice.ok(ROUTES))["queues"]) != {"team-a", "team-b"}:
            assert time.monotonic() < deadline, routes
            await asyncio.sleep(0.05)
        assert set(routes["nodes"]) == {"a", "b"}
        # LSQUEUE is read from the database in cluster mode: cut, once read, to what alice
        # may read.
        assert [q["name"] for q in (await alice.ok(LSQUEUE))["queues"]] == ["team-a"]
        assert len((await root.ok(LSQUEUE))["queues"]) == 4

    asyncio.run(main())


async def login_when_known(port: int, user: str, password: str) -> RawClient:
    """A login at a broker that may not have read the user yet (within a round)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return await scram_login(port, user, password)
        except (AssertionError, KeyError, ConnectionError):  # open, or the user not read yet
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def test_a_held_delivery_reattaches_only_with_its_own_did(cluster: Cluster) -> None:
    cluster.start("a")
    cluster.start("b")

    async def main() -> None:
        admin = await session(cluster.brokers["a"].port)
        await admin.ok(ADDQUEUE, {"name": "held", "config": {"concurrency_limit": 1}})
        owners = cluster.wait_spread({"held", "_system"}, {"a", "b"})
        victim = owners["held"]
        assert victim is not None
        survivor = "b" if victim == "a" else "a"
        worker = await session(cluster.brokers[victim].port)
        jid = (await worker.ok(ENQUEUE, {"q": "held", "job_payload": 1}))["jid"]
        await worker.ok(SUBSCRIBE, {"q": "held", "credits": 1})
        quest = (await worker.next_push(QUEST))["p"]
        await worker.ok(ACK, {"jid": jid, "did": quest["did"]})
        cluster.brokers[victim].kill()
        cluster.wait_until(lambda: cluster.owners().get("held") == survivor, "a takeover")
        back = await session(cluster.brokers[survivor].port)
        await back.ok(SUBSCRIBE, {"q": "held", "credits": 2})
        # Another did of the job is fenced out; the held one comes back with any message.
        assert await back.err(JOBBEAT, {"jid": jid, "did": "not-its-did"}) == "DELIVERY_STALE"
        assert await back.err(ACK, {"jid": jid, "did": quest["did"]}
                              ) == "DELIVERY_ALREADY_ACKED"  # acknowledged before the move
        assert "lease_expires_at" in await back.ok(JOBBEAT, {"jid": jid, "did": quest["did"]})
        # The slot is still held: a second job waits until the first one ends.
        second = (await back.ok(ENQUEUE, {"q": "held", "job_payload": 2}))["jid"]
        with pytest.raises(TimeoutError):  # nothing is pushed while the held job runs
            await back.read_frame(timeout=1.0)
        # Its `credit` gives nothing, though the worker subscribed here before it came
        # back: the job came on no subscription of this broker.
        await back.ok(COMPLETE, {"jid": jid, "did": quest["did"], "credit": True})
        assert (await back.next_push(QUEST))["p"]["jid"] == second
        assert (await back.ok(QSTATS, {"q": "held"}))["credits"] == 1
        assert stored_jobs(cluster.dsn, "held")[jid] == (int(JobStatus.COMPLETED), 1)

    asyncio.run(main())
