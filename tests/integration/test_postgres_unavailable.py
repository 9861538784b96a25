"""The PostgreSQL engine when its database cannot be reached or cannot write, on one real
server (no Patroni: `tests/ha/` has the failovers): the session's throwaway PostgreSQL,
whose sessions are cut with `pg_terminate_backend` and whose database is closed to new
ones (`ALLOW_CONNECTIONS false`) or made read-only (`default_transaction_read_only`).

What must hold (docs/storage.md, "When the database is unavailable"): a write is refused
with STORAGE_UNAVAILABLE saying nothing was written, a read too (an ERR, the connection to
the client stays open), and both work again, without a restart, as soon as the database
does; a COMMIT cut while it waited is looked up (`unavailable.py`) rather than answered "may
or may not have been stored".
"""

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from overhop.errors import ErrorCode, RequestError
from overhop.storage import operations as ops
from overhop.storage.postgres import unavailable
from tests.support import http_client
from tests.support.postgres import PostgresServer
from tests.support.raw_client import RawClient
from tests.support.server_process import ServerProcess
from tests.support.storage_engines import Storage, StorageTarget, run_on
from tests.unit.test_storage_contract import Jobs, queue

ADDQUEUE, ENQUEUE, QSTATS, PING, PONG, SUBSCRIBE, QUEST = 9, 14, 18, 3, 105, 6, 106
OK, ERR = 101, 102
# A bound on each wait below for the server to see a session end; far above what it takes.
SETTLE_TIMEOUT_S = 10.0
POLL_S = 0.05  # poll interval while waiting for pg_stat_activity to show a state


def _admin(dsn: str) -> psycopg.Connection:
    """A superuser session on the same server, outside the database under test."""
    return psycopg.connect(dsn.rsplit("/", 1)[0] + "/postgres", autocommit=True)


def _database(dsn: str) -> str:
    return dsn.rsplit("/", 1)[1]


def _cut(admin: psycopg.Connection, database: str, application: str = "overhop-%") -> int:
    """End the sessions of overhop's processes on `database`; how many there were."""
    rows = admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND application_name LIKE %s", (database, application)).fetchall()
    return len(rows)


def _close(admin: psycopg.Connection, database: str, *, closed: bool) -> None:
    admin.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS {'false' if closed else 'true'}")


def _sessions(admin: psycopg.Connection, database: str, application: str) -> int:
    row = admin.execute("SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = %s AND application_name = %s",
                        (database, application)).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def target(postgres_dsn: str, tmp_path: Path) -> StorageTarget:
    return StorageTarget("postgres", tmp_path / "data", postgres_dsn)


async def _refusal(storage: Storage, op: ops.Operation[Any]) -> RequestError:
    with pytest.raises(RequestError) as caught:
        await storage.submit(op).durable
    return caught.value


def test_a_write_on_a_cut_or_closed_database_is_refused_then_goes_through(
        target: StorageTarget) -> None:
    jobs = Jobs()

    async def body(s: Storage) -> None:
        await s.do(ops.AddQueue(queue()))
        with _admin(target.dsn) as admin:
            database = _database(target.dsn)
            _close(admin, database, closed=True)
            try:
                assert _cut(admin, database) >= 2  # the writer's session, the reads'
                refused = await _refusal(s, ops.Enqueue(jobs.new()))
                assert refused.code == ErrorCode.STORAGE_UNAVAILABLE, refused
                assert refused.message == unavailable.NOT_WRITTEN
                # No session can be had now: refused at once, again, not hung.
                started = time.monotonic()
                again = await _refusal(s, ops.Enqueue(jobs.new()))
                assert again.code == ErrorCode.STORAGE_UNAVAILABLE, again
                assert time.monotonic() - started < SETTLE_TIMEOUT_S
                assert s.writer.failed
            finally:
                _close(admin, database, closed=False)
        job = jobs.new()
        assert await s.do(ops.Enqueue(job)) == job.job_id  # a new session, no restart
        assert not s.writer.failed
        stored = await s.reads.get_job(job.job_id)
        assert stored is not None and stored.job_id == job.job_id

    run_on(target, body)


def test_a_read_only_database_refuses_writes_until_it_takes_them_again(
        target: StorageTarget) -> None:
    """A session on a server that became read-only (what a demoted primary is) is dropped,
    and the next write looks for a writable one."""
    jobs = Jobs()

    async def body(s: Storage) -> None:
        await s.do(ops.AddQueue(queue()))
        database = _database(target.dsn)
        with _admin(target.dsn) as admin:
            admin.execute(f"ALTER DATABASE {database} SET default_transaction_read_only = on")
            try:
                _cut(admin, database, "overhop-writer")
                for _ in range(2):  # the cut session, then a new, read-only one
                    refused = await _refusal(s, ops.Enqueue(jobs.new()))
                    assert refused.code == ErrorCode.STORAGE_UNAVAILABLE, refused
            finally:
                admin.execute(f"ALTER DATABASE {database} RESET default_transaction_read_only")
        job = jobs.new()
        assert await s.do(ops.Enqueue(job)) == job.job_id

    run_on(target, body)


def test_reads_survive_a_cut_refuse_while_closed_and_close_every_connection(
        target: StorageTarget) -> None:
    jobs = Jobs()
    job = jobs.new()
    database = _database(target.dsn)

    async def body(s: Storage) -> None:
        await s.do(ops.AddQueue(queue()))
        await s.do(ops.Enqueue(job))
        with _admin(target.dsn) as admin:
            assert _cut(admin, database, "overhop-reads") == 2  # the pool (pool_size 2)
            # Broken while idle: replaced, and the read runs on the new connection.
            found = await s.reads.get_job(job.job_id)
            assert found is not None and found.job_id == job.job_id
            _close(admin, database, closed=True)
            try:
                _cut(admin, database, "overhop-reads")
                with pytest.raises(RequestError) as caught:
                    await s.reads.get_job(job.job_id)
                assert caught.value.code == ErrorCode.STORAGE_UNAVAILABLE
                assert caught.value.message == unavailable.NOT_READ
            finally:
                _close(admin, database, closed=False)
            found = await s.reads.get_job(job.job_id)
            assert found is not None
            assert (await s.reads.counts("q"))[found.status] == 1

    run_on(target, body)
    with _admin(target.dsn) as admin:  # replaced connections were closed too
        assert _sessions(admin, database, "overhop-reads") == 0


@pytest.fixture
def sync_rep_server() -> Iterator[PostgresServer]:
    """A server of its own: the test below sets `synchronous_standby_names`, server-wide."""
    server = PostgresServer().start()
    yield server
    server.stop()


def test_a_commit_cut_while_it_waits_is_looked_up_and_answered_ok(
        sync_rep_server: PostgresServer, tmp_path: Path) -> None:
    """A COMMIT waiting for a synchronous standby that never answers is committed locally;
    its session is ended: the writer finds the batch landed and answers OK, not "in
    doubt"."""
    target = StorageTarget("postgres", tmp_path / "data", sync_rep_server.new_database())
    database = _database(target.dsn)
    jobs = Jobs()
    job = jobs.new()

    async def body(s: Storage) -> None:
        await s.do(ops.AddQueue(queue()))
        with _admin(target.dsn) as admin:
            admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
            admin.execute("SELECT pg_reload_conf()")
            try:
                write = s.submit(ops.Enqueue(job))
                await _until(lambda: _waiting_for_standby(admin, database))
                _cut(admin, database, "overhop-writer")
            finally:
                admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
                admin.execute("SELECT pg_reload_conf()")
            assert await asyncio.wait_for(write.durable, SETTLE_TIMEOUT_S * 3) == job.job_id
        stored = await s.reads.get_job(job.job_id)
        assert stored is not None
        assert (await s.reads.counts("q"))[stored.status] == 1

    run_on(target, body)


def _waiting_for_standby(admin: psycopg.Connection, database: str) -> bool:
    row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND "
                        "application_name = 'overhop-writer' AND wait_event = 'SyncRep'",
                        (database,)).fetchone()
    return row is not None and row[0] == 1


async def _until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while not check():
        assert time.monotonic() < deadline, "the state did not come in time"
        await asyncio.sleep(POLL_S)


def test_the_server_answers_err_and_keeps_the_connection(
        start_server: Callable[..., ServerProcess], postgres_server: PostgresServer) -> None:
    """Through a real server: ENQUEUE and QSTATS answer ERR STORAGE_UNAVAILABLE while the
    database is closed, the connection stays open (PING), and both work once it opens."""
    dsn = postgres_server.new_database()
    server = start_server("--storage.engine", "postgres", "--storage.postgres.dsn", dsn)
    database = _database(dsn)

    async def scenario() -> None:
        client = await RawClient.connect(server.port)
        await client.register(name="producer")
        await client.ok(ADDQUEUE, {"name": "q"})
        await client.ok(ENQUEUE, {"q": "q", "job_payload": "before"})
        with _admin(dsn) as admin:
            _close(admin, database, closed=True)
            try:
                _cut(admin, database)
                for message, payload in ((ENQUEUE, {"q": "q", "job_payload": "during"}),
                                         (QSTATS, {"q": "q"})):
                    reply = await client.request(message, payload)
                    assert reply["t"] == ERR, reply
                    assert reply["p"]["code"] == "STORAGE_UNAVAILABLE", reply
                assert (await client.request(PING))["t"] == PONG
                for path in ("/metrics", "/api/queues/q/jobs"):  # HTTP reads: 503
                    reply = await asyncio.to_thread(http_client.request, server.http_url + path)
                    assert reply.status == 503, (path, reply)
                    assert reply.json()["error"] == "STORAGE_UNAVAILABLE", reply
            finally:
                _close(admin, database, closed=False)
        await client.ok(ENQUEUE, {"q": "q", "job_payload": "after"})
        stats = await client.ok(QSTATS, {"q": "q"})
        assert stats["stats"]["waiting"] == 2, stats
        await client.close()

    asyncio.run(scenario())
    assert not server.events("handler_failed") and not server.events("request_failed")


def test_a_dispatch_that_could_not_be_written_is_tried_again(
        start_server: Callable[..., ServerProcess], postgres_server: PostgresServer) -> None:
    """A worker subscribes while the database is closed: its dispatch fails, and once the
    database opens the job reaches it with nothing else happening (it used to wait for the
    next enqueue or credit)."""
    dsn = postgres_server.new_database()
    server = start_server("--storage.engine", "postgres", "--storage.postgres.dsn", dsn)
    database = _database(dsn)

    async def scenario() -> None:
        client = await RawClient.connect(server.port)
        await client.register(name="worker")
        await client.ok(ADDQUEUE, {"name": "q"})
        jid = (await client.ok(ENQUEUE, {"q": "q", "job_payload": "waiting"}))["jid"]
        with _admin(dsn) as admin:
            _close(admin, database, closed=True)
            try:
                _cut(admin, database)
                await client.ok(SUBSCRIBE, {"q": "q", "credits": 1})
                await _until(lambda: bool(server.events("dispatch_failed")))
            finally:
                _close(admin, database, closed=False)
        quest = await client.next_push(QUEST, timeout=SETTLE_TIMEOUT_S)
        assert quest["p"]["jid"] == jid
        await client.close()

    asyncio.run(scenario())
