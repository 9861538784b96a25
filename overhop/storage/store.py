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

import lmdb

from overhop.model.jobs import JobRecord, JobStatus
from overhop.model.queues import QueueRecord
from overhop.storage import keys
from overhop.storage import lmdb_reads as reads
from overhop.storage.group_index import GroupBook
from overhop.storage.job_pages import JobPage, TaskPage, status_page, task_page
from overhop.storage.migrations import waiting_ranks
from overhop.storage.records import decode_job, decode_queue

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
        # `waiting` entries rewritten by a layout migration at this open (docs/storage.md).
        self.migrated_entries = 0
        self.meta = self.env.open_db(b"meta")
        self.queues_db = self.env.open_db(b"queues")
        self.jobs_db = self.env.open_db(b"jobs")
        self.by_status = self.env.open_db(b"by_status")
        self.by_time = self.env.open_db(b"by_time")
        self.by_finish = self.env.open_db(b"by_finish")
        self.counters_db = self.env.open_db(b"counters")
        self.users_db = self.env.open_db(b"users")
        self.schedules_db = self.env.open_db(b"schedules")
        self.unique_db = self.env.open_db(b"unique")
        self.groups_db = self.env.open_db(b"groups")
        self.group_ring = self.env.open_db(b"group_ring")
        self.group_waiting = self.env.open_db(b"group_waiting")
        self._page_size: int = self.env.stat()["psize"]
        if not owner:
            return
        try:
            self._check_layout()
        except StoreOpenError:
            self.close()
            raise

    def _check_layout(self) -> None:
        with self.env.begin() as txn:
            stored = txn.get(keys.META_LAYOUT_VERSION, db=self.meta)
        if stored is not None and stored[0] == 1:
            self.migrated_entries = waiting_ranks(self.env, self.by_status, self.meta)
            stored = bytes((2,))
        if stored is not None and stored[0] == 2:
            # Layout 3 added the unique and group tables (empty in a layout-2 store) and
            # grouped `waiting` entries: only the version changes.
            stored = bytes((keys.LAYOUT_VERSION,))
            with self.env.begin(write=True) as txn:
                txn.put(keys.META_LAYOUT_VERSION, stored, db=self.meta)
        with self.env.begin(write=True) as txn:
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
            return [decode_queue(value) for _, value in reads.items_from(txn.cursor())]

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._read() as txn:
            data = reads.get(txn, job_id.encode(), self.jobs_db)
        return None if data is None else decode_job(data)

    def counts(self, queue_name: str) -> dict[JobStatus, int]:
        with self._read() as txn:
            return {status: reads.count(txn, self.counters_db, queue_name, status)
                    for status in JobStatus}

    def list_jobs(self, queue_name: str, status: JobStatus, offset: int, limit: int,
                  max_bytes: int, after: bytes | None = None) -> JobPage:
        """Jobs of one status in creation order; whether the page was cut short; whether
        more jobs of that status follow the last one returned.

        With `after` (a job id's uuid bytes) the page starts at the first job after it,
        found in O(log n); skipping `offset` jobs costs O(offset). The page stops early
        (cut short) once the jobs read hold `max_bytes` of records, so one reply stays
        within the envelope limit.
        """
        prefix = keys.status_prefix(queue_name, status)
        with self._read() as txn:
            cursor = txn.cursor(db=self.by_status)
            if not cursor.set_range(self._page_start(txn, queue_name, status, after)):
                return [], False, False

            def found() -> Iterator[tuple[str, bytes | None]]:
                skipped = 0
                for key in reads.keys_from(cursor):
                    if not key.startswith(prefix):
                        return
                    if skipped < offset:  # skipped without reading its record
                        skipped += 1
                        continue
                    job_id = keys.job_id_from(queue_name, key[-16:])
                    yield job_id, reads.get(txn, job_id.encode(), self.jobs_db)

            return status_page(found(), limit, max_bytes)

    def list_task_jobs(self, queue_name: str, status: JobStatus, task: str, limit: int,
                       max_bytes: int, max_read: int, after: bytes | None = None
                       ) -> TaskPage:
        """Jobs of one status and one task in creation order, reading at most `max_read`
        records: the jobs found; whether the page was cut short by `max_bytes`; and the
        job id to go on after (the last job read, or the last returned), None once the
        status is walked to its end.

        There is no index by task: the page walks the status index from `after` and
        reads each record, so `max_read` bounds the work of one page, however rare the
        task. A page may hold fewer than `limit` jobs, even none, and still go on.
        """
        prefix = keys.status_prefix(queue_name, status)
        with self._read() as txn:
            cursor = txn.cursor(db=self.by_status)
            if not cursor.set_range(self._page_start(txn, queue_name, status, after)):
                return [], False, None

            def found() -> Iterator[tuple[str, bytes | None]]:
                for key in reads.keys_from(cursor):
                    if not key.startswith(prefix):
                        return
                    job_id = keys.job_id_from(queue_name, key[-16:])
                    yield job_id, reads.get(txn, job_id.encode(), self.jobs_db)

            return task_page(found(), task, limit, max_bytes, max_read)

    def _page_start(self, txn: lmdb.Transaction, queue_name: str, status: JobStatus,
                    after: bytes | None) -> bytes:
        """Where a page of one status starts: the first key past `after` (a job id's uuid
        bytes) is at or above its key followed by a zero byte. A `waiting` key has the
        job's rank before the uuid (`keys.listed_rank`), read from its record (the
        default's when the job is gone: the page then goes on from its place among the
        default priority's ungrouped jobs)."""
        prefix = keys.status_prefix(queue_name, status)
        if after is None:
            return prefix
        if status == JobStatus.WAITING:
            data = reads.get(txn, keys.job_id_from(queue_name, after).encode(), self.jobs_db)
            prefix += bytes((keys.listed_rank(None if data is None else decode_job(data)),))
        return prefix + after + b"\x00"

    def group_active(self, queue_name: str, group: str) -> int:
        """How many of the group's jobs are active (its record in `groups`)."""
        with self._read() as txn:
            return GroupBook(txn, self.groups_db, self.group_ring).counts(
                keys.queue_prefix(queue_name), group).active

    def oldest_created_ms(self, queue_name: str, status: JobStatus) -> int | None:
        """Creation time of the oldest job in a status, from its uuid7 in the FIFO index
        (for `waiting`, the oldest of the first entries of each priority)."""
        prefix = keys.status_prefix(queue_name, status)
        with self._read() as txn:
            cursor = txn.cursor(db=self.by_status)
            if status == JobStatus.WAITING:
                key = reads.oldest_waiting_key(cursor, prefix)
            elif cursor.set_range(prefix) and reads.key_at(cursor).startswith(prefix):
                key = reads.key_at(cursor)
            else:
                key = None
        return None if key is None else int.from_bytes(key[-16:-10], "big")

    def first_due_ms(self, queue_name: str) -> int | None:
        """The start time of the queue's earliest delayed job, from the time index."""
        prefix = keys.queue_prefix(queue_name)
        with self._read() as txn:
            cursor = txn.cursor(db=self.by_time)
            if cursor.set_range(prefix) and reads.key_at(cursor).startswith(prefix):
                return keys.split_time_key(queue_name, reads.key_at(cursor))[0]
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
