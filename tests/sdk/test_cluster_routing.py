"""The Python SDK against three real brokers in cluster mode on one PostgreSQL database
(tests/support/cluster.py): requests reach each queue's owner, a worker runs the jobs of
queues spread over the brokers, and when a queue's owner stops, the worker subscribes at
the new owner and the job it was running completes once, re-attached there.

Everything that blocks (the database's view of the owners, stopping a broker) runs in a
thread: the worker under test runs on the test's event loop.
"""

import asyncio
import signal

from click.testing import CliRunner
from overhop_client import AsyncClient, JobContext, JobStatus, MessageType, Worker

from overhop.cli import cli
from tests.sdk.harness import DEADLINE_S, running, wait_until
from tests.support.cluster import Cluster, cluster  # noqa: F401  (the fixture)

NODES = ("n1", "n2", "n3")
QUEUES = tuple(f"spread-{n}" for n in range(6))


def start_brokers(brokers: Cluster) -> list[str]:
    """Start the three brokers; their addresses, in order."""
    for node in NODES:
        brokers.start(node)
    return [brokers.address(node) for node in NODES]


async def spread_queues(brokers: Cluster, client: AsyncClient) -> dict[str, str | None]:
    """Create QUEUES and wait until every broker owns some; each queue's owner (node id)."""
    for name in QUEUES:
        await client.add_queue(name)
    return await asyncio.to_thread(brokers.wait_spread, set(QUEUES), set(NODES))


def test_a_client_given_three_brokers_sends_each_request_to_its_queues_owner(
        cluster: Cluster) -> None:  # noqa: F811
    addresses = start_brokers(cluster)

    async def main() -> None:
        async with await AsyncClient.connect(",".join(addresses)) as client:
            assert client.cluster
            owners = await spread_queues(cluster, client)
            jids = await asyncio.gather(*(client.enqueue(name, {"n": n})
                                          for name in QUEUES for n in range(3)))
            jobs = [await client.job(jid) for jid in jids]
            assert all(job is not None and job.status == JobStatus.WAITING for job in jobs)
            assert {(await client.stats(name)).counts.waiting for name in QUEUES} == {3}
            # The queues are on all three brokers, and the client reached each.
            routes = await client.request(MessageType.ROUTES)
            assert {routes["queues"][name] for name in QUEUES} == set(addresses)
            assert {owners[name] for name in QUEUES} == set(NODES)

        # One address: the first QUEUE_MOVED shows the cluster, and the client follows it.
        elsewhere = next(name for name in QUEUES if owners[name] != NODES[0])
        async with await AsyncClient.connect(addresses[0]) as single:
            assert not single.cluster
            jid = await single.enqueue(elsewhere, "followed")
            assert single.cluster
            job = await single.job(jid)
            assert job is not None and job.payload == "followed"

    asyncio.run(main())


def test_a_worker_given_three_brokers_runs_the_jobs_of_queues_spread_over_them(
        cluster: Cluster) -> None:  # noqa: F811
    addresses = start_brokers(cluster)

    async def main() -> None:
        async with await AsyncClient.connect(addresses) as client:
            await spread_queues(cluster, client)
            app = Worker(addresses, concurrency=2, name="spread-worker")
            for name in QUEUES:
                @app.handler(name)
                async def echo(ctx: JobContext) -> object:
                    return [ctx.queue, ctx.payload]

            async with running(app):
                jids = [(name, n, await client.enqueue(name, n))
                        for name in QUEUES for n in range(4)]
                for name, n, jid in jids:
                    assert await client.result(jid, timeout=DEADLINE_S) == [name, n]

    asyncio.run(main())


class HeldJobs:
    """A worker with one slot on queue "moving" whose job "first" runs until released;
    when each job started and ended (loop time)."""

    def __init__(self, addresses: list[str]) -> None:
        self.started, self.release = asyncio.Event(), asyncio.Event()
        self.runs: dict[str, list[float]] = {}
        self.app = Worker(addresses, concurrency=1, name="moving-worker", reconnect_max=0.5)
        self.app.handler("moving")(self.hold)

    async def hold(self, ctx: JobContext) -> object:
        loop = asyncio.get_running_loop()
        self.runs.setdefault(ctx.payload, []).append(loop.time())
        if ctx.payload == "first":
            self.started.set()
            await self.release.wait()
        self.runs[ctx.payload].append(loop.time())
        return ctx.payload

    async def subscribed(self) -> None:
        async def connected() -> bool:
            return self.app.connected

        await wait_until(connected, bool, "the worker subscribed at the queue's owner")

    async def check_ran_once(self, client: AsyncClient, first: str, second: str) -> None:
        """`first` completed in one attempt, run once; `second` ran only after it ended."""
        assert await client.result(first, timeout=DEADLINE_S) == "first"
        assert await client.result(second, timeout=DEADLINE_S) == "second"
        job = await client.job(first)
        assert job is not None and job.status == JobStatus.COMPLETED
        assert [(a.attempt, a.outcome) for a in job.history] == [(1, "completed")]
        assert len(self.runs["first"]) == 2  # started once, ended once
        assert self.runs["second"][0] >= self.runs["first"][1]  # the one slot was taken


async def owned_queue(brokers: Cluster, client: AsyncClient) -> str:
    """Create queue "moving"; the node that owns it."""
    await client.add_queue("moving")
    owners = await asyncio.to_thread(brokers.wait_spread, {"moving"}, set(NODES))
    owner = owners["moving"]
    assert owner is not None
    return owner


async def taken_over(brokers: Cluster, victim: str) -> None:
    await asyncio.to_thread(brokers.wait_until,
                            lambda: brokers.owners().get("moving") not in (None, victim),
                            "the queue taken over")


def test_when_a_queues_owner_dies_its_running_job_completes_once_at_the_new_owner(
        cluster: Cluster) -> None:  # noqa: F811
    """SIGKILL: the job runs on through the takeover; its COMPLETE re-attaches the delivery
    at the new owner, where the worker has subscribed again with no extra slot."""
    addresses = start_brokers(cluster)

    async def main() -> None:
        held = HeldJobs(addresses)
        async with await AsyncClient.connect(addresses) as client:
            victim = await owned_queue(cluster, client)
            async with running(held.app):
                first = await client.enqueue("moving", "first")
                await asyncio.wait_for(held.started.wait(), DEADLINE_S)
                second = await client.enqueue("moving", "second")  # waits for the slot
                await asyncio.to_thread(cluster.brokers[victim].kill)
                await taken_over(cluster, victim)
                await held.subscribed()
                assert "second" not in held.runs  # the move gave the worker no extra slot
                held.release.set()
                await held.check_ran_once(client, first, second)

    asyncio.run(main())


def test_when_a_queues_owner_stops_the_worker_subscribes_at_the_new_owner(
        cluster: Cluster) -> None:  # noqa: F811
    """SIGTERM: the stopping owner waits for the running job (its shutdown grace), takes
    its COMPLETE, then hands the queue over (SUBEND queue_moved); the worker subscribes at
    the new owner, which runs the next job."""
    addresses = start_brokers(cluster)

    async def main() -> None:
        held = HeldJobs(addresses)
        async with await AsyncClient.connect(addresses) as client:
            victim = await owned_queue(cluster, client)
            broker = cluster.brokers[victim]
            async with running(held.app):
                first = await client.enqueue("moving", "first")
                await asyncio.wait_for(held.started.wait(), DEADLINE_S)
                second = await client.enqueue("moving", "second")
                assert broker.process is not None
                broker.process.send_signal(signal.SIGTERM)

                async def stopping() -> bool:
                    return bool(broker.events("server_stopping"))

                await wait_until(stopping, bool, "the owner stopping")
                held.release.set()
                await held.check_ran_once(client, first, second)
                await asyncio.to_thread(broker.process.wait, DEADLINE_S)
                await taken_over(cluster, victim)
                await held.subscribed()
                third = await client.enqueue("moving", "third")
                assert await client.result(third, timeout=DEADLINE_S) == "third"

    asyncio.run(main())


def test_the_cli_takes_the_brokers_as_a_comma_separated_list(
        cluster: Cluster) -> None:  # noqa: F811
    addresses = start_brokers(cluster)
    listed = ",".join(addresses)

    async def setup() -> dict[str, str | None]:
        async with await AsyncClient.connect(listed) as client:
            return await spread_queues(cluster, client)

    owners = asyncio.run(setup())
    shown = CliRunner().invoke(cli, ["queues", "--url", listed], prog_name="overhop")
    assert shown.exit_code == 0, shown.output
    assert all(name in shown.stdout for name in QUEUES)
    elsewhere = next(name for name in QUEUES if owners[name] != NODES[0])
    added = CliRunner().invoke(cli, ["enqueue", elsewhere, '{"a": 1}', "--url", listed],
                               prog_name="overhop")
    assert added.exit_code == 0, added.output
    jid = added.stdout.strip()
    assert jid.startswith(f"{elsewhere}:")
    found = CliRunner().invoke(cli, ["job", jid, "--url", listed, "--json"],
                               prog_name="overhop")
    assert found.exit_code == 0, found.output
    assert '"a": 1' in found.stdout
