"""The store: opens the LMDB environment, reads, and the write primitives of one transaction.

Reads run in the caller's thread in short read transactions, never held across an await.
Writes happen only inside `StoreTxn`, which the writer process (`writer_process.py`) hands
to each operation; a `StoreTxn` keeps records, both indexes and the counters in step, so
they can never drift apart.

Two processes open the environment: the server (the owner: it holds the lock file, checks
the layout, and only reads after that) and its writer process. When the writer grows the
map, the server's next read transaction finds the data beyond its own mapping (LMDB's
MDB_MAP_RESIZED) and adopts the new size before reading.
"""

import fcntl
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import lmdb

from overhop.errors import ErrorCode, RequestError
from overhop.model.jobs import TRANSITIONS, JobRecord, JobStatus
from overhop.model.queues import QueueRecord
from overhop.storage import keys
from overhop.storage.keys import U64
from overhop.storage.records import decode_job, decode_queue, encode_job, encode_queue

LOCK_FILE = "overhop.lock"
# Named databases plus headroom for future ones.
MAX_DBS = 16
# Readers: the event loop, the writer process, and short-lived tools; 126 is LMDB's default.
MAX_READERS = 126
# How long opening waits for the lock file, and how often it tries.
LOCK_WAIT_S = 2.0
LOCK_POLL_S = 0.02


class StoreOpenError(Exception):
    """The data directory cannot be used; str() is one line saying why."""


class StoreLockedError(StoreOpenError):
    """Another process owns this data directory."""


@dataclass(frozen=True, slots=True)
class StorageUsage:
    path: str
    map_size_bytes: int
    used_bytes: int
    file_bytes: int


class Store:
    """One LMDB environment, owned by this server (an exclusive lock file guards it).

    The writer process opens the same environment with `owner=False`: it shares the
    server's lock through the descriptor it inherits (`lock_fd`), so the lock is free again
    only once both processes are gone.
    """

    def __init__(self, path: Path, *, map_size: int, sync: bool, owner: bool = True) -> None:
        self.path = path
        self.lock_fd = -1
        if owner:
            path.mkdir(parents=True, exist_ok=True)
            self.lock_fd = _take_lock(path)
        self.env = lmdb.open(
            str(path), map_size=map_size, max_dbs=MAX_DBS, max_readers=MAX_READERS,
            # One sync per commit: each commit's meta page becomes durable with the next
            # commit's data sync, or with the syncer thread's sync when idle (see writer.py).
            sync=sync, metasync=False, readahead=False,
        )
        self.stale_readers_cleared = self.env.reader_check()
        self.meta = self.env.open_db(b"meta")
        self.queues_db = self.env.open_db(b"queues")
        self.jobs_db = self.env.open_db(b"jobs")
        self.by_status = self.env.open_db(b"by_status")
        self.by_time = self.env.open_db(b"by_time")
        self.by_finish = self.env.open_db(b"by_finish")
        self.counters_db = self.env.open_db(b"counters")
        self.users_db = self.env.open_db(b"users")
        self._page_size: int = self.env.stat()["psize"]
        if not owner:
            return
        try:
            self._check_layout()
        except StoreOpenError:
            self.close()
            raise

    def _check_layout(self) -> None:
        with self.env.begin(write=True) as txn:
            stored = txn.get(keys.META_LAYOUT_VERSION, db=self.meta)
            if stored is None:
                txn.put(keys.META_LAYOUT_VERSION, bytes((keys.LAYOUT_VERSION,)), db=self.meta)
            elif stored[0] != keys.LAYOUT_VERSION:
                raise StoreOpenError(
                    f"storage path {self.path} has layout version {stored[0]}; this overhop "
                    f"reads version {keys.LAYOUT_VERSION} (see docs/storage.md)")

    def close(self) -> None:
        self.env.sync(True)
        self.env.close()
        if self.lock_fd >= 0:
            os.close(self.lock_fd)

    # -- reads -------------------------------------------------------------------------

    def _read(self, db: "lmdb._Database | None" = None) -> lmdb.Transaction:
        try:
            return self.env.begin(db=db)
        except lmdb.MapResizedError:
            self.adopt_map_size()
            return self.env.begin(db=db)

    def adopt_map_size(self) -> None:
        """Map the size the writer process last gave the map (no transaction may be open
        in this process: true on the event loop between callbacks)."""
        self.env.set_mapsize(0)

    def load_queues(self) -> list[QueueRecord]:
        with self._read(self.queues_db) as txn:
            return [decode_queue(value) for _, value in _items(txn.cursor())]

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._read() as txn:
            data = _get(txn, job_id.encode(), self.jobs_db)
        return None if data is None else decode_job(data)

    def counts(self, queue_name: str) -> dict[JobStatus, int]:
        with self._read() as txn:
            return {status: _count(txn, self.counters_db, queue_name, status)
                    for status in JobStatus}

    def list_jobs(self, queue_name: str, status: JobStatus, offset: int, limit: int,
                  max_bytes: int, after: bytes | None = None
                  ) -> tuple[list[JobRecord], bool, bool]:
        """Jobs of one status in creation order; whether the page was cut short; whether
        more jobs of that status follow the last one returned.

        With `after` (a job id's uuid bytes) the page starts at the first job after it,
        found in O(log n); skipping `offset` jobs costs O(offset). The page stops early
        (cut short) once the jobs read hold `max_bytes` of records, so one reply stays
        within the envelope limit.
        """
        prefix = keys.status_prefix(queue_name, status)
        jobs: list[JobRecord] = []
        held = 0
        with self._read() as txn:
            cursor = txn.cursor(db=self.by_status)
            # Keys are the prefix and 16 uuid bytes: the first key past `after` is at or
            # above `after` followed by a zero byte.
            start = prefix if after is None else prefix + after + b"\x00"
            if not cursor.set_range(start):
                return jobs, False, False
            skipped = 0
            for key in _keys(cursor):
                if not key.startswith(prefix):
                    return jobs, False, False
                if skipped < offset:
                    skipped += 1
                    continue
                if len(jobs) >= limit:
                    return jobs, False, True
                data = _get(txn, keys.job_id_from(queue_name, key[-16:]).encode(), self.jobs_db)
                if data is None:
                    continue
                held += len(data)
                if jobs and held > max_bytes:
                    return jobs, True, True
                jobs.append(decode_job(data))
        return jobs, False, False

    def oldest_created_ms(self, queue_name: str, status: JobStatus) -> int | None:
        """Creation time of the oldest job in a status, from its uuid7 in the FIFO index."""
        prefix = keys.status_prefix(queue_name, status)
        with self._read() as txn:
            cursor = txn.cursor(db=self.by_status)
            if cursor.set_range(prefix) and _key(cursor).startswith(prefix):
                return int.from_bytes(_key(cursor)[len(prefix):len(prefix) + 6], "big")
        return None

    def first_due_ms(self, queue_name: str) -> int | None:
        """The start time of the queue's earliest delayed job, from the time index."""
        prefix = keys.queue_prefix(queue_name)
        with self._read() as txn:
            cursor = txn.cursor(db=self.by_time)
            if cursor.set_range(prefix) and _key(cursor).startswith(prefix):
                return keys.split_time_key(queue_name, _key(cursor))[0]
        return None

    def map_use(self) -> tuple[int, int]:
        """(map size, bytes used up to the high-water page): cheap, no system call."""
        info = self.env.info()
        return info["map_size"], (info["last_pgno"] + 1) * self._page_size

    def usage(self) -> StorageUsage:
        info = self.env.info()
        page_size = self.env.stat()["psize"]
        data_file = self.path / "data.mdb"
        return StorageUsage(
            path=str(self.path),
            map_size_bytes=info["map_size"],
            used_bytes=(info["last_pgno"] + 1) * page_size,
            file_bytes=data_file.stat().st_size if data_file.exists() else 0,
        )


def _take_lock(path: Path) -> int:
    """The exclusive lock on the data directory, waiting up to `LOCK_WAIT_S` for it: the
    writer process of a server that was just killed lets go a moment after its server."""
    lock_fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock_fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(lock_fd)
                raise StoreLockedError(
                    f"storage path {path} is in use by another overhop process") from None
            time.sleep(LOCK_POLL_S)


# This store never asks LMDB for buffers, so every key and value it reads is `bytes` (the
# `lmdb` type stubs also allow memoryview): these say so to the type checker.


def _get(txn: lmdb.Transaction, key: bytes, db: "lmdb._Database") -> bytes | None:
    return cast("bytes | None", txn.get(key, db=db))


def _key(cursor: lmdb.Cursor) -> bytes:
    return cast(bytes, cursor.key())


def _keys(cursor: lmdb.Cursor) -> Iterator[bytes]:
    """The keys from the cursor's position on."""
    return cast("Iterator[bytes]", cursor.iternext(values=False))


def _items(cursor: lmdb.Cursor) -> Iterator[tuple[bytes, bytes]]:
    return cast("Iterator[tuple[bytes, bytes]]", iter(cursor))


def _count(txn: lmdb.Transaction, db: lmdb._Database, queue_name: str, status: int) -> int:
    data = txn.get(keys.counter_key(queue_name, status), db=db)
    return 0 if data is None else U64.unpack(data)[0]


FINISHED_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED})
IndexState = tuple[JobStatus, int, int | None]


def index_state(job: JobRecord) -> IndexState:
    """What a job's index entries are made of: take it before changing the job."""
    return job.status, job.execution_start_at_ms, job.finished_at_ms


class StoreTxn:
    """The write primitives of one write transaction. Used only by the writer thread."""

    __slots__ = ("_counter_deltas", "_store", "txn")

    def __init__(self, store: Store, txn: lmdb.Transaction) -> None:
        self._store = store
        self.txn = txn
        # Counter changes are summed here and written once per (queue, status) by
        # `flush_counters`, just before the commit: a batch of 500 enqueues writes the
        # waiting counter once, not 500 times.
        self._counter_deltas: dict[bytes, int] = {}

    # -- queues ------------------------------------------------------------------------

    def get_queue(self, name: str) -> QueueRecord | None:
        data = _get(self.txn, name.encode(), self._store.queues_db)
        return None if data is None else decode_queue(data)

    def put_queue(self, queue: QueueRecord) -> None:
        self.txn.put(queue.name.encode(), encode_queue(queue), db=self._store.queues_db)

    def queue_exists(self, name: str) -> bool:
        return self.txn.get(name.encode(), db=self._store.queues_db) is not None

    def delete_queue(self, name: str) -> None:
        store = self._store
        self.txn.delete(name.encode(), db=store.queues_db)
        for status in JobStatus:
            key = keys.counter_key(name, status)
            self.txn.delete(key, db=store.counters_db)
            self._counter_deltas.pop(key, None)

    def count(self, queue_name: str, status: JobStatus) -> int:
        stored = _count(self.txn, self._store.counters_db, queue_name, status)
        return stored + self._counter_deltas.get(keys.counter_key(queue_name, status), 0)

    def queue_job_total(self, queue_name: str) -> int:
        return sum(self.count(queue_name, status) for status in JobStatus)

    # -- jobs --------------------------------------------------------------------------

    def get_job(self, job_id: str) -> JobRecord | None:
        data = _get(self.txn, job_id.encode(), self._store.jobs_db)
        return None if data is None else decode_job(data)

    def insert_job(self, job: JobRecord, stored: bytes | None = None) -> None:
        """A new job; `stored` is its record encoded already (as it came from the server),
        else it is encoded here."""
        data = encode_job(job) if stored is None else stored
        self.txn.put(job.job_id.encode(), data, db=self._store.jobs_db)
        prefixes = keys.queue_prefixes(job.queue_name)
        self._index(job, prefixes, keys.job_uuid_bytes(job.job_id))
        self._bump(prefixes[job.status], 1)

    def indexed_job(self, job_id: str) -> JobRecord:
        """A job an index just named: its absence is a broken index, a bug."""
        job = self.get_job(job_id)
        if job is None:
            raise RuntimeError(f"an index names missing job {job_id}")
        return job

    def current_delivery(self, job_id: str, delivery_id: str) -> JobRecord:
        """The job held by this delivery, or DELIVERY_STALE: it is no longer active with
        it (its end was written already, or it was removed)."""
        job = self.get_job(job_id)
        if job is None or job.status != JobStatus.ACTIVE or job.delivery_id != delivery_id:
            raise RequestError(
                ErrorCode.DELIVERY_STALE,
                f"delivery {delivery_id} of {job_id} is no longer current")
        return job

    def move_job(self, job: JobRecord, status: JobStatus, **changes: Any) -> bytes:
        """Give a job read in this transaction its new `status` and field values, move its
        index entries and counters to match, and write it; the bytes stored.

        Every change to a stored job goes through here (a move to the status it has
        already, as for appended log lines, just rewrites it). A move that `TRANSITIONS`
        does not list is a bug: it raises before writing.
        """
        before = index_state(job)
        job.status = status
        for name, value in changes.items():
            setattr(job, name, value)
        return self.update_job(job, before)

    def update_job(self, job: JobRecord, before: "IndexState") -> bytes:
        """Store `job` after a change; move its index entries if what they hold changed.
        The bytes stored.

        `before` is `index_state(job)` taken before the change. A status change that
        `TRANSITIONS` does not list is a bug: it raises before writing.
        """
        previous_status = before[0]
        status = job.status
        if status != previous_status and (previous_status, status) not in TRANSITIONS:
            raise RuntimeError(
                f"{job.job_id}: {previous_status.label} -> {status.label} is not a transition"
            )
        data = encode_job(job)
        self.txn.put(job.job_id.encode(), data, db=self._store.jobs_db)
        if index_state(job) != before:
            prefixes = keys.queue_prefixes(job.queue_name)
            uuid_bytes = keys.job_uuid_bytes(job.job_id)
            self._unindex(prefixes, uuid_bytes, before)
            self._index(job, prefixes, uuid_bytes)
            if status != previous_status:
                self._bump(prefixes[previous_status], -1)
                self._bump(prefixes[status], 1)
        return data

    def delete_job(self, job: JobRecord) -> None:
        self.txn.delete(job.job_id.encode(), db=self._store.jobs_db)
        prefixes = keys.queue_prefixes(job.queue_name)
        self._unindex(prefixes, keys.job_uuid_bytes(job.job_id), index_state(job))
        self._bump(prefixes[job.status], -1)

    def finished_job_ids(self, queue_name: str, status: JobStatus, limit: int
                         ) -> list[tuple[int, str]]:
        """Up to `limit` (finish ms, job id) of completed or failed jobs, earliest first."""
        prefix = keys.status_prefix(queue_name, status)
        cursor = self.txn.cursor(db=self._store.by_finish)
        found: list[tuple[int, str]] = []
        if not cursor.set_range(prefix):
            return found
        for key in _keys(cursor):
            if not key.startswith(prefix) or len(found) >= limit:
                break
            finished_ms, uuid_bytes = keys.split_finish_key(queue_name, key)
            found.append((finished_ms, keys.job_id_from(queue_name, uuid_bytes)))
        return found

    def oldest_job_ids(self, queue_name: str, status: JobStatus, limit: int,
                       before: bytes | None = None) -> list[str]:
        """Up to `limit` job ids of one status, oldest first (the FIFO index); with
        `before`, only those whose uuid bytes sort below it."""
        prefix = keys.status_prefix(queue_name, status)
        bound = None if before is None else prefix + before
        cursor = self.txn.cursor(db=self._store.by_status)
        found: list[str] = []
        if not cursor.set_range(prefix):
            return found
        for key in _keys(cursor):
            if not key.startswith(prefix) or len(found) >= limit:
                break
            if bound is not None and key >= bound:
                break
            found.append(keys.job_id_from(queue_name, key[len(prefix):]))
        return found

    def due_job_ids(self, queue_name: str, now_ms: int, limit: int) -> list[str]:
        """Up to `limit` delayed job ids whose start time is at or before `now_ms`."""
        prefix = keys.queue_prefix(queue_name)
        bound = keys.time_key_due_bound(queue_name, now_ms)
        cursor = self.txn.cursor(db=self._store.by_time)
        found: list[str] = []
        if not cursor.set_range(prefix):
            return found
        for key in _keys(cursor):
            if key >= bound or not key.startswith(prefix) or len(found) >= limit:
                break
            found.append(keys.job_id_from(queue_name, keys.split_time_key(queue_name, key)[1]))
        return found

    def first_due_ms(self, queue_name: str) -> int | None:
        prefix = keys.queue_prefix(queue_name)
        cursor = self.txn.cursor(db=self._store.by_time)
        if cursor.set_range(prefix) and _key(cursor).startswith(prefix):
            return keys.split_time_key(queue_name, _key(cursor))[0]
        return None

    # -- index and counter upkeep ------------------------------------------------------

    def _index(self, job: JobRecord, prefixes: tuple[bytes, ...], uuid_bytes: bytes) -> None:
        store = self._store
        status = job.status
        self.txn.put(prefixes[status] + uuid_bytes, b"", db=store.by_status)
        if status == JobStatus.DELAYED:
            self.txn.put(keys.timed_key(prefixes[0], job.execution_start_at_ms, uuid_bytes),
                         b"", db=store.by_time)
        elif status == JobStatus.COMPLETED or status == JobStatus.FAILED:
            self.txn.put(keys.timed_key(prefixes[status], job.finished_at_ms or 0, uuid_bytes),
                         b"", db=store.by_finish)

    def _unindex(self, prefixes: tuple[bytes, ...], uuid_bytes: bytes,
                 before: "IndexState") -> None:
        store = self._store
        status, start_ms, finished_ms = before
        self.txn.delete(prefixes[status] + uuid_bytes, db=store.by_status)
        if status == JobStatus.DELAYED:
            self.txn.delete(keys.timed_key(prefixes[0], start_ms, uuid_bytes), db=store.by_time)
        elif status == JobStatus.COMPLETED or status == JobStatus.FAILED:
            self.txn.delete(keys.timed_key(prefixes[status], finished_ms or 0, uuid_bytes),
                            db=store.by_finish)

    def _bump(self, counter_key: bytes, delta: int) -> None:
        deltas = self._counter_deltas
        deltas[counter_key] = deltas.get(counter_key, 0) + delta

    def flush_counters(self) -> None:
        """Write the summed counter changes; the writer calls this right before commit."""
        db = self._store.counters_db
        for key, delta in self._counter_deltas.items():
            if not delta:
                continue
            current = self.txn.get(key, db=db)
            value = (0 if current is None else U64.unpack(current)[0]) + delta
            if value < 0:
                raise RuntimeError(f"counter {key!r} would go negative")
            self.txn.put(key, U64.pack(value), db=db)
        self._counter_deltas.clear()

