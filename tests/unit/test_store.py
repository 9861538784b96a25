"""The storage layer on real LMDB in temporary directories: key order, record codecs,
one transaction keeping records, indexes and counters in step, the lock, the layout check."""

import struct
from pathlib import Path

import lmdb
import pytest

from overhop.broker.ids import JobIdGenerator
from overhop.errors import ErrorCode, RequestError
from overhop.model.jobs import JobRecord, JobStatus, priority_rank
from overhop.model.queues import BackoffKind, QueueConfig, QueueRecord, QueueState
from overhop.storage import keys, migrations
from overhop.storage.records import decode_job, decode_queue, encode_job, encode_queue
from overhop.storage.store import Store, StoreLockedError, StoreOpenError
from overhop.storage.store_txn import StoreTxn, index_state

MAP = 16 * 1024 * 1024


def new_job(job_id: str, status: JobStatus, start_ms: int = 1000) -> JobRecord:
    return JobRecord(job_id=job_id, queue_name="q", status=status, payload=b"\x01",
                     created_at_ms=1000, execution_start_at_ms=start_ms, max_attempts=None,
                     retry_interval_ms=None, lease_ms=None)


def write(store: Store, action) -> None:  # type: ignore[no-untyped-def]
    with store.env.begin(write=True) as txn:
        store_txn = StoreTxn(store, txn)
        action(store_txn)
        store_txn.flush_counters()


def index_entries(store: Store, db: lmdb._Database) -> list[bytes]:
    with store.env.begin() as txn:
        return [key for key, _ in txn.cursor(db=db)]


def test_job_ids_sort_by_creation_even_within_one_millisecond() -> None:
    generator = JobIdGenerator()
    ids = [generator.new_job_id("q", 5000) for _ in range(5000)]  # more than one ms holds
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(uuid[14] == "7" for uuid in (job_id[2:] for job_id in ids))  # version 7
    later = generator.new_job_id("q", 9000)
    assert later > ids[-1]
    assert keys.job_uuid_bytes(later)[:6] == (9000).to_bytes(6, "big")


def test_time_keys_sort_by_start_time_then_creation() -> None:
    generator = JobIdGenerator()
    a, b = (keys.job_uuid_bytes(generator.new_job_id("q", ms)) for ms in (1, 2))

    def time_key(queue_name: str, at_ms: int, uuid_bytes: bytes) -> bytes:
        return keys.timed_key(keys.queue_prefixes(queue_name)[0], at_ms, uuid_bytes)

    assert time_key("q", 500, b) < time_key("q", 600, a)
    assert time_key("q", 500, a) < time_key("q", 500, b)
    assert time_key("q", 500, a) < keys.time_key_due_bound("q", 500)
    assert time_key("q", 501, a) >= keys.time_key_due_bound("q", 500)
    # A queue whose name is a prefix of another's never shares its key range.
    assert not time_key("qq", 0, a).startswith(keys.queue_prefix("q"))


def test_records_round_trip() -> None:
    job = new_job("q:" + str(JobIdGenerator().new_uuid(1)), JobStatus.DELAYED)
    job.history.append({"attempt": 1, "outcome": "failed", "error": {"message": "x", "f": 1.5}})
    job.logs.append([12, "line"])
    assert decode_job(encode_job(job)) == job
    queue = QueueRecord("id", "q", QueueState.PAUSED, 7,
                        QueueConfig(concurrency_limit=3, backoff=BackoffKind.EXPONENTIAL,
                                    rate_limit=5, completed_max_count=10))
    assert decode_queue(encode_queue(queue)) == queue


def test_changes_keep_records_indexes_and_counters_in_step(tmp_path: Path) -> None:
    store = Store(tmp_path / "data", map_size=MAP, sync=True)
    generator = JobIdGenerator()
    first, second = (generator.new_job_id("q", n) for n in (1, 2))
    write(store, lambda t: (t.insert_job(new_job(first, JobStatus.WAITING)),
                            t.insert_job(new_job(second, JobStatus.DELAYED, start_ms=9000))))
    assert store.counts("q")[JobStatus.WAITING] == 1
    assert store.counts("q")[JobStatus.DELAYED] == 1
    assert store.first_due_ms("q") == 9000

    def activate_then_complete(txn: StoreTxn) -> None:
        job = txn.get_job(first)
        assert job is not None
        before = index_state(job)
        job.status = JobStatus.ACTIVE
        job.delivery_id = "d"
        txn.update_job(job, before)
        before = index_state(job)
        job.status = JobStatus.COMPLETED
        job.finished_at_ms = 4242
        txn.update_job(job, before)

    write(store, activate_then_complete)
    counts = store.counts("q")
    assert (counts[JobStatus.WAITING], counts[JobStatus.ACTIVE], counts[JobStatus.COMPLETED]) \
        == (0, 0, 1)
    assert len(index_entries(store, store.by_status)) == 2
    (finish_key,) = index_entries(store, store.by_finish)
    assert keys.split_finish_key("q", finish_key)[0] == 4242
    jobs, truncated, more = store.list_jobs("q", JobStatus.COMPLETED, 0, 10, MAP)
    assert [job.job_id for job in jobs] == [first] and not truncated and not more

    write(store, lambda t: t.delete_job(t.get_job(second)))  # type: ignore[arg-type]
    assert index_entries(store, store.by_time) == []
    assert store.counts("q")[JobStatus.DELAYED] == 0
    assert store.get_job(second) is None
    store.close()


def test_a_move_the_transition_table_does_not_list_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "data", map_size=MAP, sync=True)
    job_id = JobIdGenerator().new_job_id("q", 1)
    write(store, lambda t: t.insert_job(new_job(job_id, JobStatus.COMPLETED)))

    def reopen_completed(txn: StoreTxn) -> None:
        job = txn.get_job(job_id)
        assert job is not None
        before = index_state(job)
        job.status = JobStatus.WAITING
        txn.update_job(job, before)

    with pytest.raises(RuntimeError, match="not a transition"):
        write(store, reopen_completed)
    assert store.get_job(job_id).status == JobStatus.COMPLETED  # type: ignore[union-attr]
    store.close()


def test_move_job_checks_the_delivery_moves_the_job_and_returns_what_it_stored(
        tmp_path: Path) -> None:
    """The one primitive every operation changes a stored job with (`StoreTxn.move_job`),
    and the read that precedes a worker's outcome (`current_delivery`)."""
    store = Store(tmp_path / "data", map_size=MAP, sync=True)
    job_id = JobIdGenerator().new_job_id("q", 1)
    write(store, lambda t: t.insert_job(new_job(job_id, JobStatus.WAITING)))
    stored: list[bytes] = []

    def take_then_delay(txn: StoreTxn) -> None:
        stored.append(txn.move_job(txn.indexed_job(job_id), JobStatus.ACTIVE,
                                   delivery_id="d1", worker_id="w"))
        with pytest.raises(RequestError) as stale:
            txn.current_delivery(job_id, "d0")
        assert stale.value.code == ErrorCode.DELIVERY_STALE
        job = txn.current_delivery(job_id, "d1")
        stored.append(txn.move_job(job, JobStatus.DELAYED, delivery_id=None,
                                   execution_start_at_ms=7777))

    write(store, take_then_delay)
    assert decode_job(stored[0]).status == JobStatus.ACTIVE
    assert store.get_job(job_id) == decode_job(stored[1])
    counts = store.counts("q")
    assert (counts[JobStatus.WAITING], counts[JobStatus.ACTIVE], counts[JobStatus.DELAYED]) \
        == (0, 0, 1)
    assert store.first_due_ms("q") == 7777
    with pytest.raises(RuntimeError, match="index names missing job"):
        write(store, lambda t: t.indexed_job("q:missing"))
    store.close()


def test_one_process_owns_a_data_directory(tmp_path: Path) -> None:
    first = Store(tmp_path / "data", map_size=MAP, sync=True)
    with pytest.raises(StoreLockedError, match="in use by another overhop process"):
        Store(tmp_path / "data", map_size=MAP, sync=True)
    first.close()
    Store(tmp_path / "data", map_size=MAP, sync=True).close()  # free again once closed


def test_another_layout_version_is_refused_in_one_line(tmp_path: Path) -> None:
    store = Store(tmp_path / "data", map_size=MAP, sync=True)
    with store.env.begin(write=True) as txn:
        txn.put(keys.META_LAYOUT_VERSION, struct.pack("B", keys.LAYOUT_VERSION + 1),
                db=store.meta)
    store.close()
    with pytest.raises(StoreOpenError) as refused:
        Store(tmp_path / "data", map_size=MAP, sync=True)
    assert "\n" not in str(refused.value)
    assert f"layout version {keys.LAYOUT_VERSION + 1}" in str(refused.value)
    # The refusal released the directory: fixing the version makes it usable again.
    env = lmdb.open(str(tmp_path / "data"), max_dbs=16, map_size=MAP)
    with env.begin(write=True) as txn:
        txn.put(keys.META_LAYOUT_VERSION, bytes((keys.LAYOUT_VERSION,)),
                db=env.open_db(b"meta", txn=txn))
    env.close()
    Store(tmp_path / "data", map_size=MAP, sync=True).close()


def test_a_layout_1_store_gets_priority_ranks_in_its_waiting_entries(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Layout 1 had no rank byte in `waiting` entries: opening such a store rewrites them
    (in several bounded transactions here) with the default priority's rank, leaves the
    other statuses' entries alone, and then records layout 2."""
    generator = JobIdGenerator()
    waiting = [generator.new_job_id("q", 1000 + n) for n in range(5)]
    delayed = generator.new_job_id("q", 2000)
    store = Store(tmp_path / "data", map_size=MAP, sync=True)
    write(store, lambda t: [t.insert_job(new_job(job_id, JobStatus.WAITING))
                            for job_id in waiting])
    write(store, lambda t: t.insert_job(new_job(delayed, JobStatus.DELAYED, start_ms=9000)))
    current = index_entries(store, store.by_status)
    rank = bytes((priority_rank(None),))
    waiting_prefix = keys.status_prefix("q", JobStatus.WAITING)
    # Make it a layout-1 store: waiting entries without the rank byte.
    with store.env.begin(write=True) as txn:
        for key in current:
            if key.startswith(waiting_prefix):
                txn.delete(key, db=store.by_status)
                txn.put(waiting_prefix + key[-16:], b"", db=store.by_status)
        txn.put(keys.META_LAYOUT_VERSION, bytes((1,)), db=store.meta)
    store.close()

    monkeypatch.setattr(migrations, "MIGRATION_BATCH", 2)
    reopened = Store(tmp_path / "data", map_size=MAP, sync=True)
    try:
        assert reopened.migrated_entries == 5
        assert index_entries(reopened, reopened.by_status) == current
        assert all(key[len(waiting_prefix):len(waiting_prefix) + 1] == rank
                   for key in current if key.startswith(waiting_prefix))
        with reopened.env.begin() as txn:
            assert txn.get(keys.META_LAYOUT_VERSION, db=reopened.meta) == bytes(
                (keys.LAYOUT_VERSION,))
        jobs, _, _ = reopened.list_jobs("q", JobStatus.WAITING, 0, 10, 1 << 20)
        assert [job.job_id for job in jobs] == waiting
    finally:
        reopened.close()
    again = Store(tmp_path / "data", map_size=MAP, sync=True)
    assert again.migrated_entries == 0
    again.close()
