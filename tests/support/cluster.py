"""Several real `overhop serve` brokers in cluster mode on one throwaway PostgreSQL database
(tests/support/postgres.py), each on 127.0.0.1 with an OS-chosen port, started and stopped
by PID. Leases are short so takeovers happen within a test's patience.
"""

import asyncio
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from overhop.model.jobs import JobStatus
from overhop.storage.records import decode_job
from tests.support.postgres import PostgresServer
from tests.support.raw_client import RawClient
from tests.support.server_process import ServerProcess
from tests.support.shared_connection import SharedConnection

# Small enough that a takeover takes about two seconds, large enough that a busy 2-core CI
# machine renews in time.
LEASE_MS = 1500
RENEW_MS = 300
WAIT_S = 30.0


class Cluster:
    def __init__(self, dsn: str, root: Path, lease_ms: int = LEASE_MS,
                 renew_ms: int = RENEW_MS) -> None:
        self.dsn = dsn
        self.root = root
        self.lease_ms = lease_ms
        self.renew_ms = renew_ms
        self.brokers: dict[str, ServerProcess] = {}

    def start(self, node_id: str, *extra_args: str) -> ServerProcess:
        broker = ServerProcess(self.root / node_id, [
            "--storage.engine", "postgres", "--storage.postgres.dsn", self.dsn,
            "--cluster.node_id", node_id, "--cluster.lease_ms", str(self.lease_ms),
            "--cluster.renew_ms", str(self.renew_ms), *extra_args]).start()
        self.brokers[node_id] = broker
        return broker

    def address(self, node_id: str) -> str:
        return f"127.0.0.1:{self.brokers[node_id].port}"

    def owners(self) -> dict[str, str | None]:
        """Each queue's owner as the database records it (None: no live lease)."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            rows = conn.execute("SELECT queue, CASE WHEN lease_until > now() THEN owner END "
                                "FROM overhop_owners").fetchall()
        return {queue: owner for queue, owner in rows}

    def wait_until(self, condition: Callable[[], bool], what: str,
                   timeout: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; owners: {self.owners()}")

    def wait_spread(self, queues: set[str], nodes: set[str]) -> dict[str, str | None]:
        """Wait until every queue of `queues` is owned by one of `nodes` and each of
        those owns at least one; the owners then."""
        def spread() -> bool:
            owners = self.owners()
            held = {owners.get(name) for name in queues}
            return held <= nodes and len(held) == min(len(nodes), len(queues))
        self.wait_until(spread, f"{sorted(queues)} spread over {sorted(nodes)}")
        return self.owners()

    def stop_all(self) -> None:
        for broker in self.brokers.values():
            if broker.process is not None and broker.process.poll() is None:
                try:
                    broker.process.send_signal(signal.SIGCONT)
                    broker.stop()
                except Exception:
                    broker.kill()


@pytest.fixture
def cluster(postgres_server: PostgresServer, tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(postgres_server.new_database(), tmp_path)
    yield made
    made.stop_all()


@dataclass
class JobLog:
    """What a following worker saw: when each job started and ended (monotonic seconds,
    QUEST received and COMPLETE about to be sent), and every COMPLETE's answer code."""

    spans: dict[str, list[float]] = field(default_factory=dict)
    answers: dict[str, list[str]] = field(default_factory=dict)
    moves: list[str] = field(default_factory=list)

    def max_overlap(self, queue_name: str) -> int:
        """The most jobs of the queue running at once."""
        edges = sorted((t, step) for jid, (start, end) in
                       ((j, s) for j, s in self.spans.items() if len(s) == 2)
                       if jid.startswith(queue_name + ":")
                       for t, step in ((start, 1), (end, -1)))
        running = most = 0
        for _, step in edges:
            running += step
            most = max(most, running)
        return most


class FollowingWorker:
    """A worker written against protocol section 12 only (not the SDK): it finds the
    queue's owner with ROUTES, subscribes there, and when its broker goes away or sends
    SUBEND `queue_moved`, finds the new owner and sends it the outcomes of the jobs it is
    still running (the re-attach)."""

    def __init__(self, cluster: Cluster, queue_name: str, credits: int, work_s: float,
                 log: JobLog) -> None:
        self._cluster = cluster
        self._queue = queue_name
        self._credits = credits
        self._work_s = work_s
        self._log = log
        self._finished: dict[str, str] = {}  # jid -> did, its COMPLETE not yet answered
        self._running: set[asyncio.Task[None]] = set()
        self._conn: SharedConnection | None = None
        self.stopped = False

    async def run(self) -> None:
        while not self.stopped:
            address = await self._owner()
            if address is None:
                await asyncio.sleep(0.05)
                continue
            host, port = address.rsplit(":", 1)
            try:
                conn = await SharedConnection.open(int(port), f"follower-{self._queue}",
                                                   self._started, host)
            except (TimeoutError, ConnectionError, OSError):
                await asyncio.sleep(0.05)
                continue
            self._conn = conn
            try:
                await self._serve(conn)
            except (TimeoutError, ConnectionError, OSError):
                pass  # the broker is gone or stopped: find the owner again
            finally:
                self._conn = None
                conn.abort()

    async def _serve(self, conn: SharedConnection) -> None:
        for jid, did in list(self._finished.items()):
            await self._send_outcome(conn, jid, did)
        reply = await conn.request(6, {"q": self._queue, "credits": self._credits})
        if reply["t"] != 101:
            await asyncio.sleep(0.05)
            return
        while not self.stopped:
            ended = await conn.subends.get()
            if ended is None:
                return
            if ended.get("reason") == "queue_moved":
                self._log.moves.append(str(ended.get("owner")))
                return

    def _started(self, quest: dict[str, Any]) -> None:
        self._log.spans[quest["jid"]] = [time.monotonic()]
        task = asyncio.create_task(self._work(quest["jid"], quest["did"], quest["sid"]))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _work(self, jid: str, did: str, sid: str) -> None:
        await asyncio.sleep(self._work_s)
        self._log.spans[jid].append(time.monotonic())
        self._finished[jid] = did
        conn = self._conn
        if conn is not None:
            try:
                await self._send_outcome(conn, jid, did)
                await conn.request(8, {"sid": sid, "credits": 1})
            except (TimeoutError, ConnectionError, OSError):
                pass  # sent again to the next owner

    async def _send_outcome(self, conn: SharedConnection, jid: str, did: str) -> None:
        reply = await conn.request(20, {"jid": jid, "did": did})
        code = "OK" if reply["t"] == 101 else reply["p"]["code"]
        self._log.answers.setdefault(jid, []).append(code)
        if code != "QUEUE_MOVED":
            self._finished.pop(jid, None)
        else:
            conn.abort()  # find the owner again

    async def _owner(self) -> str | None:
        for broker in list(self._cluster.brokers.values()):
            if broker.process is None or broker.process.poll() is not None:
                continue
            try:
                conn = await asyncio.wait_for(SharedConnection.open(broker.port, "routes"),
                                              1.0)
            except (TimeoutError, ConnectionError, OSError):
                continue
            try:
                owner = (await conn.request(50, {}))["p"]["queues"].get(self._queue)
                if owner is not None:
                    return str(owner)
            except (TimeoutError, ConnectionError, OSError):
                continue
            finally:
                conn.abort()
        return None

    async def stop(self) -> None:
        self.stopped = True
        if self._conn is not None:
            self._conn.abort()
        for task in list(self._running):
            task.cancel()


# -- scenarios shared by the cluster tests (plain PostgreSQL, and HA in tests/ha) ----------

HELLO, REGISTER, ADDQUEUE, ENQUEUEMANY = 1, 2, 9, 30


async def session(port: int) -> RawClient:
    client = await RawClient.connect(port)
    assert (await client.request(HELLO))["t"] == 103  # HI
    await client.ok(REGISTER, {"name": "test"})
    return client


async def owner_client(c: Cluster, queue_name: str) -> RawClient:
    owner = c.owners()[queue_name]
    assert owner is not None
    return await session(c.brokers[owner].port)


def stored_jobs(dsn: str, queue_name: str) -> dict[str, tuple[int, int]]:
    """Every job of the queue as stored: id -> (status number, attempts so far)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT value FROM overhop_kv WHERE space = 2 AND key >= %s "
                            "AND key < %s", (f"{queue_name}:".encode(),
                                             f"{queue_name};".encode())).fetchall()
    jobs = [decode_job(bytes(row[0])) for row in rows]
    return {job.job_id: (int(job.status), job.attempts_so_far) for job in jobs}


async def take_over_a_killed_owner(cluster: Cluster) -> None:
    """On three running brokers: a queue with a limit of 2 and ten jobs, a following worker
    running two of them when the queue's owner is killed (SIGKILL). Another broker takes
    the queue within lease + renew, the two running jobs re-attach there (their COMPLETE is
    answered OK), the limit is never exceeded, and every job is completed exactly once."""
    admin = await session(cluster.brokers["a"].port)
    await admin.ok(ADDQUEUE, {"name": "work", "config": {"concurrency_limit": 2}})
    cluster.wait_spread({"work", "_system"}, {"a", "b", "c"})
    victim = cluster.owners()["work"]
    assert victim is not None
    producer = await owner_client(cluster, "work")
    jids = (await producer.ok(ENQUEUEMANY, {"q": "work", "jobs": [
        {"job_payload": i} for i in range(10)]}))["jids"]
    log = JobLog()
    worker = FollowingWorker(cluster, "work", 2, 0.6, log)
    task = asyncio.create_task(worker.run())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(log.spans) < 4:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # two jobs are running now
    running = [jid for jid, span in log.spans.items() if len(span) == 1]
    assert len(running) == 2
    killed_at = time.monotonic()
    cluster.brokers[victim].kill()
    cluster.wait_until(lambda: cluster.owners().get("work") not in (None, victim),
                       "a takeover")
    took = time.monotonic() - killed_at
    assert took <= (cluster.lease_ms + cluster.renew_ms) / 1000 + 3.0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sum(
            "OK" in a for a in log.answers.values()) < 10:
        await asyncio.sleep(0.05)
    await worker.stop()
    await asyncio.gather(task, return_exceptions=True)
    assert log.max_overlap("work") <= 2
    for jid in running:  # their COMPLETE re-attached them at the new owner
        assert log.answers[jid][-1] == "OK", log.answers[jid]
    stored = stored_jobs(cluster.dsn, "work")
    assert set(stored) == set(jids)
    assert set(stored.values()) == {(int(JobStatus.COMPLETED), 1)}
