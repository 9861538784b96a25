"""Queue ownership at the writer seam (storage/postgres/fencing.py): two brokers' real writer
processes on one real PostgreSQL database. A write for a queue commits only from the broker
holding it at its current epoch; a claim succeeds only when no live lease holds the queue.
"""

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg

from overhop.errors import ErrorCode
from overhop.model.jobs import JobStatus
from overhop.storage import operations as ops
from tests.support.postgres import PostgresServer
from tests.support.storage_engines import Storage, StorageTarget, open_storage
from tests.unit.test_storage_contract import Jobs, queue


def expire_lease(dsn: str, name: str) -> None:
    """As if the owner had stopped renewing: its lease is over (the database's clock)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE overhop_owners SET lease_until = now() - interval '1 second' "
                     "WHERE queue = %s", (name,))


def owner_row(dsn: str, name: str) -> tuple[str | None, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT owner, epoch FROM overhop_owners WHERE queue = %s",
                           (name,)).fetchone()
    assert row is not None
    return row[0], row[1]


def two_brokers(postgres_server: PostgresServer, tmp_path: Path,
                body: Callable[[str, Storage, Storage], Awaitable[None]]) -> None:
    dsn = postgres_server.new_database()
    target = StorageTarget("postgres", tmp_path / "unused", dsn)

    async def main() -> None:
        async with open_storage(target, node_id="a") as a, \
                open_storage(target, node_id="b") as b:
            await body(dsn, a, b)

    asyncio.run(main())


def test_only_the_owner_writes_and_a_takeover_fences_the_old_owner(
        postgres_server: PostgresServer, tmp_path: Path) -> None:
    jobs = Jobs()

    async def body(dsn: str, a: Storage, b: Storage) -> None:
        await a.do(ops.AddQueue(queue("q")))  # the broker that adds a queue owns it
        assert owner_row(dsn, "q") == ("a", 1)
        await a.do(ops.Enqueue(jobs.new(queue="q")))
        assert await b.do(ops.ClaimQueue("q")) is None  # a's lease is live
        assert await b.refused(ops.Enqueue(jobs.new(queue="q"))) == ErrorCode.QUEUE_MOVED

        expire_lease(dsn, "q")
        record = await b.do(ops.ClaimQueue("q"))
        assert record is not None and record.name == "q"
        assert owner_row(dsn, "q") == ("b", 2)
        late = jobs.new(queue="q")
        assert await a.refused(ops.Enqueue(late)) == ErrorCode.QUEUE_MOVED
        assert await a.refused(ops.SetQueueState("q", queue("q").state)) == ErrorCode.QUEUE_MOVED
        await b.do(ops.Enqueue(jobs.new(queue="q")))
        assert await b.reads.get_job(late.job_id) is None
        assert (await b.reads.counts("q"))[JobStatus.WAITING] == 2
        # Lost once, lost for good: a never writes for q again, even unrefused ops.
        assert await a.refused(ops.PromoteDue("q", 10**13, 10)) == ErrorCode.QUEUE_MOVED

    two_brokers(postgres_server, tmp_path, body)


def test_a_batch_commits_the_writes_of_queues_still_held_and_refuses_the_rest(
        postgres_server: PostgresServer, tmp_path: Path) -> None:
    jobs = Jobs()

    async def body(dsn: str, a: Storage, b: Storage) -> None:
        await a.do(ops.AddQueue(queue("kept")))
        await a.do(ops.AddQueue(queue("lost")))
        expire_lease(dsn, "lost")
        assert await b.do(ops.ClaimQueue("lost")) is not None
        writes = [a.submit(ops.Enqueue(jobs.new(queue=name)))
                  for name in ("kept", "lost", "kept", "lost")]  # one batch
        outcomes = await asyncio.gather(*(w.durable for w in writes), return_exceptions=True)
        assert [isinstance(o, str) for o in outcomes] == [True, False, True, False]
        assert {getattr(o, "code", None) for o in outcomes[1::2]} == {ErrorCode.QUEUE_MOVED}
        assert (await a.reads.counts("kept"))[JobStatus.WAITING] == 2
        assert (await a.reads.counts("lost"))[JobStatus.WAITING] == 0

    two_brokers(postgres_server, tmp_path, body)


def test_a_released_queue_is_claimed_at_once_and_epochs_never_go_back(
        postgres_server: PostgresServer, tmp_path: Path) -> None:
    async def body(dsn: str, a: Storage, b: Storage) -> None:
        await a.do(ops.AddQueue(queue("q")))
        await a.do(ops.ReleaseQueue("q"))
        assert owner_row(dsn, "q") == (None, 1)
        assert await b.do(ops.ClaimQueue("q")) is not None
        assert owner_row(dsn, "q") == ("b", 2)
        await b.do(ops.RemoveQueue("q"))  # lets it go with the queue
        assert owner_row(dsn, "q") == (None, 2)
        assert await a.do(ops.ClaimQueue("q")) is None  # no such queue: nothing to claim
        await a.do(ops.AddQueue(queue("q")))
        assert owner_row(dsn, "q") == ("a", 3)
        assert await b.refused(ops.AddQueue(queue("q"))) == ErrorCode.QUEUE_EXISTS

    two_brokers(postgres_server, tmp_path, body)


def test_a_writer_outside_a_cluster_refuses_ownership_operations(tmp_path: Path) -> None:
    async def main() -> None:
        target = StorageTarget("lmdb", tmp_path / "data", "")
        async with open_storage(target) as lone:
            await lone.do(ops.AddQueue(queue("q")))
            assert await lone.refused(ops.ClaimQueue("q")) == ErrorCode.INTERNAL
            assert await lone.refused(ops.ReleaseQueue("q")) == ErrorCode.INTERNAL

    asyncio.run(main())
