"""The worker runner gives each job's credit back with its outcome (`credit: true`), and
with CREDIT only when that outcome was refused (worker_deliveries.py, "Credits").

What the worker sends is read from the server's own record of the frames it received
(its `frame_received` log events, at the `verbose` level); how many jobs the worker lets
the server hand it, from QSTATS: the subscription's credits plus the jobs out never pass
`concurrency + prefetch`.
"""

import asyncio
from collections import Counter
from collections.abc import Callable

import pytest
from overhop_client import AsyncClient, JobContext, JobStatus, QueueStats, Worker

from tests.sdk.harness import running, wait_for_status, wait_until
from tests.support.server_process import ServerProcess

JOBS = 12


def frames(server: ServerProcess) -> Counter[str]:
    """How many frames of each message type the server has received so far."""
    return Counter(str(event["message"]) for event in server.events("frame_received"))


async def wait_for_frames(server: ServerProcess, accept: Callable[[Counter[str]], bool],
                          what: str) -> Counter[str]:
    """The server's frame counts once `accept` likes them (its log is read by a thread)."""
    async def read() -> Counter[str]:
        return frames(server)

    return await wait_until(read, accept, what)


@pytest.mark.parametrize(("concurrency", "prefetch"), [(1, 0), (2, 1)])
def test_outcomes_carry_the_credits_back_and_no_credit_is_sent(
        start_server: Callable[..., ServerProcess], concurrency: int, prefetch: int) -> None:
    server = start_server("--logging.level", "verbose")
    url = f"127.0.0.1:{server.port}"
    capacity = concurrency + prefetch

    async def main() -> None:
        app = Worker(url, concurrency=concurrency, prefetch=prefetch)

        @app.handler("credited")
        async def work(ctx: JobContext) -> object:
            await asyncio.sleep(0.005)
            return ctx.payload

        async with await AsyncClient.connect(url) as client:
            await client.add_queue("credited")
            jids = [await client.enqueue("credited", n) for n in range(JOBS)]
            seen: list[QueueStats] = []

            async def sample() -> None:
                while True:
                    seen.append(await client.stats("credited"))

            async with running(app):
                sampler = asyncio.create_task(sample())
                for n, jid in enumerate(jids):
                    job = await wait_for_status(client, jid, JobStatus.COMPLETED)
                    assert job.result == n
                sampler.cancel()

                async def stats() -> QueueStats:
                    return await client.stats("credited")

                # Every credit is back with the server, and no more.
                await wait_until(stats, lambda s: s.credits == capacity, "credits back")
            assert len(seen) > JOBS // 2
            assert max(s.credits + s.in_flight for s in seen) <= capacity

        counts = await wait_for_frames(server, lambda c: c["COMPLETE"] == JOBS,
                                       "every COMPLETE received")
        assert counts["CREDIT"] == 0, counts

    asyncio.run(main())


def test_a_refused_outcome_gives_its_credit_back_with_credit(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--logging.level", "verbose", "--jobs.max_result_bytes", "1024")
    url = f"127.0.0.1:{server.port}"

    async def main() -> None:
        app = Worker(url, concurrency=1)
        unreported: list[str] = []

        @app.handler("too-big")
        async def too_big(ctx: JobContext) -> str:
            return "x" * 2000  # refused RESULT_TOO_LARGE: the FAIL that follows carries it

        @app.handler("unreportable")
        async def unreportable(ctx: JobContext) -> None:
            unreported.append(ctx.jid)
            raise ValueError("y" * 2000)  # its FAIL is refused too: CREDIT tops up

        async with await AsyncClient.connect(url) as client:
            await client.add_queue("too-big", max_attempts=1)
            await client.add_queue("unreportable", max_attempts=1)
            big = [await client.enqueue("too-big", n) for n in range(3)]
            lost = [await client.enqueue("unreportable", n) for n in range(3)]
            async with running(app):
                for jid in big:
                    job = await wait_for_status(client, jid, JobStatus.FAILED)
                    assert job.history[-1].error_message is not None
                    assert "cannot be stored" in job.history[-1].error_message

                # Each refused FAIL is followed by a CREDIT, so the next job comes: with
                # concurrency 1 and no credit back, the second would never run.
                async def ran() -> list[str]:
                    return unreported

                await wait_until(ran, lambda seen: sorted(seen) == sorted(lost),
                                 "every unreportable job run")
                counts = await wait_for_frames(server, lambda c: c["CREDIT"] >= 3,
                                               "a CREDIT after each refused FAIL")
                stats = await client.stats("unreportable")
                # The server holds the refused jobs until their leases end, and one credit.
                assert (stats.credits, stats.in_flight) == (1, 3)
        assert counts["CREDIT"] == 3, counts
        assert counts["COMPLETE"] == 3 and counts["FAIL"] == 6, counts

    asyncio.run(main())
