"""The writer process on a real LMDB store: visible and durable points, refusals, stop,
map growth seen by the server's reads, and a writer that dies."""

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from overhop.config.schema import JobsConfig
from overhop.errors import ErrorCode, RequestError
from overhop.model.jobs import JobRecord, JobStatus
from overhop.model.queues import QueueConfig, QueueRecord, QueueState
from overhop.storage import operations as job_ops
from overhop.storage.store import Store, StoreTxn
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


def test_a_refused_operation_reports_failure_at_both_points(tmp_path: Path) -> None:
    async def body(store: Store, writer: Writer) -> None:
        seen: list[tuple[bool, Any]] = []
        job = JobRecord("nope:01234567-89ab-7def-8123-456789abcdef", "nope", JobStatus.WAITING,
                        None, 1, 1, None, None, None)
        write = writer.submit(job_ops.Enqueue(job))
        write.visible.add_done_callback(lambda f: seen.append((False, f.exception())))
        with pytest.raises(RequestError) as caught:
            await write.durable
        assert caught.value.code == ErrorCode.QUEUE_NOT_FOUND
        await asyncio.sleep(0)
        assert len(seen) == 1 and seen[0][0] is False
        assert isinstance(seen[0][1], RequestError)

    asyncio.run(_with_writer(tmp_path, True, body))


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
