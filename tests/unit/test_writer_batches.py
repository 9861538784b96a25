"""The writer process's batch loop, run in this process on a real LMDB store: what one
commit costs in calls to LMDB's `env.info()`, and the COMMIT message it reports."""

from pathlib import Path
from typing import Any

import lmdb

from overhop.config.sections import JobsConfig
from overhop.model.jobs import JobRecord, JobStatus
from overhop.model.queues import QueueConfig, QueueRecord, QueueState
from overhop.storage import operations as ops
from overhop.storage.group_index import GroupBook
from overhop.storage.keys import queue_prefix
from overhop.storage.store import Store
from overhop.storage.writer_messages import COMMIT
from overhop.storage.writer_process import BatchWriter
from overhop.storage.writer_space import Space


class CountingEnv:
    """The store's environment, counting `info()` calls."""

    def __init__(self, env: lmdb.Environment) -> None:
        self._env = env
        self.info_calls = 0

    def info(self) -> dict[str, Any]:
        self.info_calls += 1
        return self._env.info()  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)


class Recorded:
    """A channel that keeps what the writer sends."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    def send(self, message: Any) -> None:
        self.messages.append(message)


def _job(n: int) -> JobRecord:
    return JobRecord(f"q:01234567-89ab-7def-8123-4567{n:08d}", "q", JobStatus.WAITING, b"\x01",
                     1, 1, None, None, None)


def test_one_batch_asks_lmdb_for_its_state_once_and_reports_every_outcome(
        tmp_path: Path) -> None:
    store = Store(tmp_path / "data", map_size=1 << 22, sync=True)
    env = CountingEnv(store.env)
    store.env = env  # type: ignore[assignment]
    channel = Recorded()
    try:
        space = Space(store, max_map_size=1 << 26, reserved_headroom=1 << 16)
        writer = BatchWriter(store, channel, sync=True, max_batch=64,  # type: ignore[arg-type]
                             space=space, jobs=JobsConfig())
        batch = [ops.AddQueue(QueueRecord("qid", "q", QueueState.ACTIVE, 0, QueueConfig())),
                 ops.Enqueue(_job(1)), ops.Enqueue(_job(2)), ops.RemoveJob("q:nope")]
        env.info_calls = 0
        writer._commit_batch([op.to_wire() for op in batch])
        assert env.info_calls == 1
        ((kind, results, refusals, durable, stats),) = channel.messages
        assert kind == COMMIT and len(results) == len(batch)
        assert results[1:] == [_job(1).job_id, _job(2).job_id, None]
        assert [entry[:2] for entry in refusals] == [[3, "JOB_NOT_FOUND"]]
        assert durable == 0  # nothing before it to make durable
        assert stats[:2] == (1, len(batch))
    finally:
        store.env = env._env
        store.close()


def _grouped_job(n: int, payload: bytes) -> JobRecord:
    job = _job(n)
    job.payload = payload
    job.group = "tenant"
    return job


def test_a_batch_aborted_for_room_leaves_no_trace_in_the_remembered_group_counts(
        tmp_path: Path) -> None:
    """The writer remembers group records from one commit to the next; a batch that runs
    out of room mid-way (and is run again in a grown map) must not count its jobs twice."""
    store = Store(tmp_path / "data", map_size=1 << 20, sync=False)
    try:
        space = Space(store, max_map_size=1 << 26, reserved_headroom=1 << 16)
        writer = BatchWriter(store, Recorded(), sync=False,  # type: ignore[arg-type]
                             max_batch=64, space=space, jobs=JobsConfig())
        writer._commit_batch([
            ops.AddQueue(QueueRecord("qid", "q", QueueState.ACTIVE, 0, QueueConfig())).to_wire(),
            ops.Enqueue(_grouped_job(0, b"\x01")).to_wire()])
        big = [ops.Enqueue(_grouped_job(n, b"\xc4" + bytes(50_000))).to_wire()
               for n in range(1, 21)]  # about 1 MB: more than the 1 MiB map has room for
        writer._commit_batch(big)
        assert store.env.info()["map_size"] > 1 << 20  # it did run out of room and grow
        with store.env.begin() as txn:
            counts = GroupBook(txn, store.groups_db, store.group_ring).counts(
                queue_prefix("q"), "tenant")
        assert (counts.waiting, counts.active) == (21, 0)
        assert store.counts("q")[JobStatus.WAITING] == 21
    finally:
        store.close()
