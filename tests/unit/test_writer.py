"""The writer process on a real LMDB store: visible and durable points, refusals, stop,
map growth seen by the server's reads, and a writer that dies. What both engines share
(every operation's result and refusal at both points) is in test_storage_contract.py."""

import asyncio
import gc
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from overhop.config.sections import JobsConfig
from overhop.errors import ErrorCode, RequestError
from overhop.model.jobs import JobRecord, JobStatus
from overhop.model.queues import QueueConfig, QueueRecord, QueueState
from overhop.storage import operations as job_ops
from overhop.storage.store import Store
from overhop.storage.store_txn import StoreTxn
from overhop.storage.writer import Writer


def _job(job_id: str) -> JobRecord:
    return JobRecord(f"q:{job_id}", "q", JobStatus.WAITING, b"\x80", 1, 1, None, None, None)


async def _with_writer(tmp_path: Path, sync: bool, body: Any) -> None:
    store = Store(tmp_path / "data", map_size=1 << 24, sync=sync)
    writer = Writer(store, asyncio.get_running_loop(), sync=sync, max_batch=64,
                    max_map_size=1 << 26, reserved_headroom=1 << 20, jobs=JobsConfig())
    await writer.start()
    try:
        await writer.submit(job_ops.AddQueue(
            QueueRecord("qid", "q", QueueState.ACTIVE, 0, QueueConfig()))).durable
        await body(store, writer)
    finally:
        await writer.stop()
        store.close()


@pytest.mark.parametrize("sync", [True, False])
def test_visible_comes_first_then_the_future_with_the_same_result(tmp_path: Path,
                                                                  sync: bool) -> None:
    async def body(store: Store, writer: Writer) -> None:
        events: list[tuple[str, Any]] = []
        job = _job("01234567-89ab-7def-8123-456789abcdef")
        write = writer.submit(job_ops.Enqueue(job))
        write.visible.add_done_callback(lambda f: events.append(("visible", f.result())))
        write.durable.add_done_callback(lambda f: events.append(("durable", f.result())))
        await write.durable
        await asyncio.sleep(0)
        assert events == [("visible", job.job_id), ("durable", job.job_id)]
        # Visible means committed: a reader on the loop sees it.
        stored = store.get_job(job.job_id)
        assert stored is not None and stored.status == JobStatus.WAITING

    asyncio.run(_with_writer(tmp_path, sync, body))


def test_an_idle_writer_makes_its_last_commit_durable_at_once(tmp_path: Path) -> None:
    """Nothing follows the commit: the explicit meta sync resolves the future promptly."""

    async def body(store: Store, writer: Writer) -> None:
        # Without that sync the future would never resolve: the wait times out and fails.
        await asyncio.wait_for(
            writer.submit(job_ops.Enqueue(_job("01234567-89ab-7def-8123-456789abcde0"))).durable,
            5.0)

    asyncio.run(_with_writer(tmp_path, True, body))


def test_refusals_after_a_commit_resolve_with_it(tmp_path: Path) -> None:
    """Refused operations write nothing (their commit syncs nothing): every future still
    resolves, with its own result or error."""

    async def body(store: Store, writer: Writer) -> None:
        job = _job("01234567-89ab-7def-8123-456789abcde1")
        first = writer.submit(job_ops.Enqueue(job)).durable
        refused = [writer.submit(job_ops.RemoveJob(f"q:missing-{n}")).durable
                   for n in range(3)]
        results = await asyncio.gather(first, *refused, return_exceptions=True)
        assert results[0] == job.job_id
        assert all(isinstance(r, RequestError) and r.code == ErrorCode.JOB_NOT_FOUND
                   for r in results[1:])
        assert writer.commits >= 1

    asyncio.run(_with_writer(tmp_path, True, body))


def test_stop_resolves_everything_submitted_and_it_is_on_disk(tmp_path: Path) -> None:
    ids = [f"01234567-89ab-7def-8123-4567890000{n:02d}" for n in range(20)]

    async def body(store: Store, writer: Writer) -> None:
        futures = [writer.submit(job_ops.Enqueue(_job(i))).durable for i in ids]
        await writer.stop()
        assert all(f.done() and not f.exception() for f in futures)

    asyncio.run(_with_writer(tmp_path, True, body))
    reopened = Store(tmp_path / "data", map_size=1 << 24, sync=True)
    try:
        assert all(reopened.get_job(f"q:{i}") is not None for i in ids)
        with reopened.env.begin(write=True) as txn:
            assert StoreTxn(reopened, txn).count("q", JobStatus.WAITING) == len(ids)
    finally:
        reopened.close()


def test_reads_in_the_server_follow_the_map_the_writer_process_grew(tmp_path: Path) -> None:
    """The writer process doubles the map as jobs arrive; the server's own reads adopt each
    new size (LMDB's MDB_MAP_RESIZED) instead of failing."""
    store = Store(tmp_path / "data", map_size=1 << 20, sync=False)

    async def run() -> None:
        writer = Writer(store, asyncio.get_running_loop(), sync=False, max_batch=64,
                        max_map_size=1 << 26, reserved_headroom=0, jobs=JobsConfig())
        await writer.start()
        try:
            await writer.submit(job_ops.AddQueue(
                QueueRecord("qid", "q", QueueState.ACTIVE, 0, QueueConfig()))).durable
            ids = [f"01234567-89ab-7def-8123-4567{n:08d}" for n in range(4000)]
            for chunk in range(0, len(ids), 500):
                await asyncio.gather(*(
                    writer.submit(job_ops.Enqueue(JobRecord(
                        f"q:{i}", "q", JobStatus.WAITING, b"\xc4" + bytes(1000), 1, 1, None,
                        None, None))).durable for i in ids[chunk:chunk + 500]))
                last = store.get_job(f"q:{ids[chunk + 499]}")
                assert last is not None and last.payload is not None
            assert store.usage().map_size_bytes >= 4 << 20
            assert store.counts("q")[JobStatus.WAITING] == len(ids)
        finally:
            await writer.stop()

    try:
        asyncio.run(run())
    finally:
        store.close()


def test_a_writer_process_that_dies_fails_every_write_and_says_so(tmp_path: Path) -> None:
    store = Store(tmp_path / "data", map_size=1 << 24, sync=True)

    async def run() -> None:
        lost = asyncio.Event()
        writer = Writer(store, asyncio.get_running_loop(), sync=True, max_batch=64,
                        max_map_size=1 << 26, reserved_headroom=0, jobs=JobsConfig(),
                        on_lost=lost.set)
        await writer.start()
        await writer.submit(job_ops.AddQueue(
            QueueRecord("qid", "q", QueueState.ACTIVE, 0, QueueConfig()))).durable
        assert writer.pid is not None
        os.kill(writer.pid, signal.SIGKILL)
        await asyncio.wait_for(lost.wait(), 10)
        assert writer.lost and writer.failed
        write = writer.submit(job_ops.Enqueue(_job("01234567-89ab-7def-8123-456789abcde2")))
        visible = write.visible
        with pytest.raises(RequestError) as caught:
            await write.durable
        assert caught.value.code == ErrorCode.INTERNAL
        assert visible.exception() is caught.value
        await writer.stop()  # returns at once: nothing left to stop

    try:
        asyncio.run(run())
    finally:
        store.close()


async def _three_turns(writer: Writer, ids: list[str]) -> list[list["asyncio.Future[str]"]]:
    """Submit a third of `ids` in each of three loop turns, the writer process stopped
    (SIGSTOP) by the caller. The first two turns' messages are sent (the second waits in
    the writer's inbox); the third's stays in the server, which holds later operations
    while a message already waits, until a commit is reported."""
    turns = []
    for part in (ids[0::3], ids[1::3], ids[2::3]):
        turns.append([writer.submit(job_ops.Enqueue(_job(i))).durable for i in part])
        await asyncio.sleep(0)  # the hand-over runs at the end of the turn
        await asyncio.sleep(0)
    return turns


def test_stop_writes_what_waits_behind_a_message_already_in_the_writer(tmp_path: Path) -> None:
    """On SIGTERM under write load, the operations still held in the server when stop()
    is called (a message already waits in the writer) are sent and written too."""
    ids = [f"01234567-89ab-7def-8123-4567890001{n:02d}" for n in range(30)]

    async def body(store: Store, writer: Writer) -> None:
        assert writer.pid is not None
        os.kill(writer.pid, signal.SIGSTOP)
        try:
            turns = await _three_turns(writer, ids)
        finally:
            os.kill(writer.pid, signal.SIGCONT)
        await asyncio.wait_for(writer.stop(), 10)
        for future in (f for turn in turns for f in turn):
            assert future.done() and future.exception() is None

    asyncio.run(_with_writer(tmp_path, True, body))
    reopened = Store(tmp_path / "data", map_size=1 << 24, sync=True)
    try:
        assert all(reopened.get_job(f"q:{i}") is not None for i in ids)
    finally:
        reopened.close()


def test_a_lost_writer_says_which_writes_may_have_been_stored(tmp_path: Path) -> None:
    """Writes sent before the writer process died may or may not be stored: their error
    says so. Writes it never received, and writes submitted after, say nothing was
    written."""
    store = Store(tmp_path / "data", map_size=1 << 24, sync=True)
    ids = [f"01234567-89ab-7def-8123-4567890002{n:02d}" for n in range(9)]

    async def run() -> None:
        lost = asyncio.Event()
        writer = Writer(store, asyncio.get_running_loop(), sync=True, max_batch=64,
                        max_map_size=1 << 26, reserved_headroom=0, jobs=JobsConfig(),
                        on_lost=lost.set)
        await writer.start()
        await writer.submit(job_ops.AddQueue(
            QueueRecord("qid", "q", QueueState.ACTIVE, 0, QueueConfig()))).durable
        assert writer.pid is not None
        os.kill(writer.pid, signal.SIGSTOP)
        sent_first, sent_second, held = await _three_turns(writer, ids)
        os.kill(writer.pid, signal.SIGKILL)
        await asyncio.wait_for(lost.wait(), 10)
        after = writer.submit(job_ops.Enqueue(_job("01234567-89ab-7def-8123-456789abcde3")))
        outcomes = await asyncio.gather(*sent_first, *sent_second, *held, after.durable,
                                        return_exceptions=True)
        assert all(isinstance(o, RequestError) and o.code == ErrorCode.INTERNAL
                   for o in outcomes)
        messages = [str(o) for o in outcomes]
        unknown = len(sent_first) + len(sent_second)
        assert set(messages[:unknown]) == {
            "the storage writer process stopped; this write may or may not have been stored"}
        assert set(messages[unknown:]) == {
            "the storage writer process has stopped; nothing was written"}
        await writer.stop()

    try:
        asyncio.run(run())
    finally:
        store.close()


@pytest.mark.parametrize("sync", [True, False])
def test_visible_futures_resolve_in_order_before_the_durable_ones(tmp_path: Path,
                                                                  sync: bool) -> None:
    ids = [f"01234567-89ab-7def-8123-4567890003{n:02d}" for n in range(5)]

    async def body(store: Store, writer: Writer) -> None:
        events: list[tuple[str, int]] = []
        writes = [writer.submit(job_ops.Enqueue(_job(i))) for i in ids]
        for n, write in enumerate(writes):
            write.visible.add_done_callback(lambda f, n=n: events.append(("visible", n)))
            write.durable.add_done_callback(lambda f, n=n: events.append(("durable", n)))
        await asyncio.gather(*(write.durable for write in writes))
        await asyncio.sleep(0)
        assert events == ([("visible", n) for n in range(5)]
                          + [("durable", n) for n in range(5)])
        assert [write.durable.result() for write in writes] == [f"q:{i}" for i in ids]

    asyncio.run(_with_writer(tmp_path, sync, body))


def test_a_refusal_seen_at_the_visible_point_alone_is_not_reported_unretrieved(
        tmp_path: Path) -> None:
    """A caller that acts on the visible future only (as dispatch does) retrieves its
    failure there; the durable future's copy must not log "exception was never
    retrieved" when it is dropped."""

    async def body(store: Store, writer: Writer) -> None:
        unhandled: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: unhandled.append(ctx))
        write = writer.submit(job_ops.RemoveJob("q:missing"))
        with pytest.raises(RequestError):
            await write.visible
        await writer.submit(job_ops.Barrier()).durable  # the refusal is durable too
        assert write.durable.done()
        del write
        gc.collect()
        assert unhandled == []

    asyncio.run(_with_writer(tmp_path, True, body))


@pytest.mark.parametrize("sync", [True, False])
def test_callbacks_are_told_in_order_before_the_futures_callbacks_run(tmp_path: Path,
                                                                       sync: bool) -> None:
    """`when_visible` and `when_durable` are called as the writer's messages are read: in
    submission order, every visible one of a commit before its durable ones, with the
    result or the refusal, and before any callback of the futures (those wait for the
    loop)."""
    ids = [f"01234567-89ab-7def-8123-4567890004{n:02d}" for n in range(4)]

    async def body(store: Store, writer: Writer) -> None:
        events: list[tuple[str, int, Any, Any]] = []
        operations: list[Any] = [job_ops.Enqueue(_job(i)) for i in ids]
        operations.insert(2, job_ops.RemoveJob("q:missing"))  # refused, third in order
        writes = [writer.submit(operation) for operation in operations]
        for n, write in enumerate(writes):
            write.when_visible(lambda result, error, n=n: events.append(
                ("visible", n, result, error and error.code)))
            write.when_durable(lambda result, error, n=n: events.append(
                ("durable", n, result, error and error.code)))
            write.durable.add_done_callback(lambda f, n=n: events.append(("future", n, 0, 0)))
        await asyncio.gather(*(write.durable for write in writes), return_exceptions=True)
        await asyncio.sleep(0)
        results = [f"q:{i}" for i in ids]
        results.insert(2, None)
        codes = [None, None, ErrorCode.JOB_NOT_FOUND, None, None]
        told = [(kind, n) for kind, n, _, _ in events]
        assert told == ([("visible", n) for n in range(5)] + [("durable", n) for n in range(5)]
                        + [("future", n) for n in range(5)])
        for kind in ("visible", "durable"):
            assert [(result, code) for k, _, result, code in events if k == kind] == list(
                zip(results, codes, strict=True))

    asyncio.run(_with_writer(tmp_path, sync, body))


def test_a_callback_that_raises_does_not_stop_the_others(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    async def body(store: Store, writer: Writer) -> None:
        told: list[int] = []

        def broken(result: Any, error: Any) -> None:
            raise RuntimeError("a bug in a callback")

        first = writer.submit(job_ops.Enqueue(_job("01234567-89ab-7def-8123-456789000501")))
        second = writer.submit(job_ops.Enqueue(_job("01234567-89ab-7def-8123-456789000502")))
        first.when_visible(broken)
        first.when_durable(broken)
        second.when_visible(lambda result, error: told.append(1))
        second.when_durable(lambda result, error: told.append(2))
        assert await first.durable == "q:01234567-89ab-7def-8123-456789000501"
        await second.durable
        assert told == [1, 2]

    asyncio.run(_with_writer(tmp_path, True, body))


def test_callbacks_of_a_write_the_writer_never_took_are_told_its_failure(tmp_path: Path
                                                                         ) -> None:
    async def body(store: Store, writer: Writer) -> None:
        await writer.stop()
        told: list[tuple[str, Any, Any]] = []
        write = writer.submit(job_ops.Enqueue(_job("01234567-89ab-7def-8123-456789000601")))
        write.when_visible(lambda result, error: told.append(("visible", result, error.code)))
        write.when_durable(lambda result, error: told.append(("durable", result, error.code)))
        with pytest.raises(RequestError):
            await write.durable
        assert told == [("visible", None, ErrorCode.INTERNAL),
                        ("durable", None, ErrorCode.INTERNAL)]

    asyncio.run(_with_writer(tmp_path, True, body))
