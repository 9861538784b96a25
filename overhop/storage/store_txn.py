"""The write primitives of one LMDB write transaction (`StoreTxn`).

The writer process (`writer_process.py`) hands a `StoreTxn` to each operation; it keeps
records, both indexes and the counters in step, so they can never drift apart.
"""

from typing import TYPE_CHECKING, Any

import lmdb

from overhop.errors import ErrorCode, RequestError
from overhop.model.jobs import (
    FINISHED_STATUSES,
    TRANSITIONS,
    JobRecord,
    JobStatus,
    priority_rank,
)
from overhop.model.queues import QueueRecord
from overhop.model.uniqueness import holds_key
from overhop.storage import keys
from overhop.storage import lmdb_reads as reads
from overhop.storage.group_index import GroupBook, KnownGroups, group_waiting_prefix
from overhop.storage.keys import GROUPED_RANK, U64
from overhop.storage.records import decode_job, decode_queue, encode_job, encode_queue
from overhop.storage.store import Store

if TYPE_CHECKING:
    from overhop.storage.postgres.txn import PgSpaces

IndexState = tuple[JobStatus, int, int | None, int | None]


def index_state(job: JobRecord) -> IndexState:
    """What a job's index entries are made of: take it before changing the job."""
    return job.status, job.execution_start_at_ms, job.finished_at_ms, job.priority


def _group_deltas(before: JobStatus | None, after: JobStatus | None) -> tuple[int, int]:
    """What a move from `before` to `after` (None: no job) does to its group's waiting and
    active counts."""
    return ((after == JobStatus.WAITING) - (before == JobStatus.WAITING),
            (after == JobStatus.ACTIVE) - (before == JobStatus.ACTIVE))


# Every move that changes a group's counts, and by how much (a table: moves are hot).
_GROUP_DELTAS: dict[tuple[JobStatus | None, JobStatus | None], tuple[int, int]] = {
    (before, after): _group_deltas(before, after)
    for before in (None, *JobStatus) for after in (None, *JobStatus)
    if _group_deltas(before, after) != (0, 0)
}


class StoreTxn:
    """The write primitives of one write transaction. Used only by the writer thread."""

    __slots__ = ("_counter_deltas", "_group_limits", "_group_waiting_cursor", "_store",
                 "groups", "txn")

    def __init__(self, store: "Store | PgSpaces", txn: Any,
                 known_groups: KnownGroups | None = None) -> None:
        self._store = store
        # An `lmdb.Transaction`, or the PostgreSQL engine's `PgKv`, which answers the same
        # five calls (get, put, delete, cursor; see postgres/kv.py).
        self.txn = txn
        self.groups = GroupBook(txn, store.groups_db, store.group_ring, known_groups)
        self._group_waiting_cursor: Any = None  # made at the first per-group read
        # Each queue's group limit, read once per transaction when a grouped job moves.
        self._group_limits: dict[str, int | None] = {}
        # Counter changes are summed here and written once per (queue, status) by
        # `flush_counters`, just before the commit: a batch of 500 enqueues writes the
        # waiting counter once, not 500 times.
        self._counter_deltas: dict[bytes, int] = {}

    # -- queues ------------------------------------------------------------------------

    def get_queue(self, name: str) -> QueueRecord | None:
        data = reads.get(self.txn, name.encode(), self._store.queues_db)
        return None if data is None else decode_queue(data)

    def put_queue(self, queue: QueueRecord) -> None:
        self.txn.put(queue.name.encode(), encode_queue(queue), db=self._store.queues_db)
        self._group_limits.pop(queue.name, None)

    def group_limit(self, queue_name: str) -> int | None:
        limits = self._group_limits
        if queue_name not in limits:
            queue = self.get_queue(queue_name)
            limits[queue_name] = None if queue is None else queue.config.group_concurrency_limit
        return limits[queue_name]

    def queue_exists(self, name: str) -> bool:
        return self.txn.get(name.encode(), db=self._store.queues_db) is not None

    def delete_queue(self, name: str) -> None:
        store = self._store
        self.txn.delete(name.encode(), db=store.queues_db)
        for status in JobStatus:
            key = keys.counter_key(name, status)
            self.txn.delete(key, db=store.counters_db)
            self._counter_deltas.pop(key, None)
        self.groups.forget_queue(keys.queue_prefix(name))

    def count(self, queue_name: str, status: JobStatus) -> int:
        stored = reads.count(self.txn, self._store.counters_db, queue_name, status)
        return stored + self._counter_deltas.get(keys.counter_key(queue_name, status), 0)

    def queue_job_total(self, queue_name: str) -> int:
        return sum(self.count(queue_name, status) for status in JobStatus)

    # -- jobs --------------------------------------------------------------------------

    def get_job(self, job_id: str) -> JobRecord | None:
        data = reads.get(self.txn, job_id.encode(), self._store.jobs_db)
        return None if data is None else decode_job(data)

    def insert_job(self, job: JobRecord, stored: bytes | None = None) -> None:
        """A new job; `stored` is its record encoded already (as it came from the server),
        else it is encoded here."""
        data = encode_job(job) if stored is None else stored
        self.txn.put(job.job_id.encode(), data, db=self._store.jobs_db)
        prefixes = keys.queue_prefixes(job.queue_name)
        uuid_bytes = keys.job_uuid_bytes(job.job_id)
        self._index(job, prefixes, uuid_bytes)
        self._bump(prefixes[job.status], 1)
        if job.group is not None:
            self._group_moved(job, prefixes[0], None, job.status)
        if (job.unique_key is not None and job.unique_scope is not None
                and holds_key(job.unique_scope, job.status)):
            self.txn.put(keys.unique_key(job.queue_name, job.unique_key),
                         keys.UNIQUE_HOLDER.pack(uuid_bytes, job.unique_expires_at_ms or 0),
                         db=self._store.unique_db)

    def unique_holder(self, queue_name: str, unique_key: str, now_ms: int) -> str | None:
        """The id of the job holding this unique key now, if one does (a held duration that
        has run out holds nothing)."""
        data = reads.get(self.txn, keys.unique_key(queue_name, unique_key),
                         self._store.unique_db)
        if data is None:
            return None
        uuid_bytes, ends_ms = keys.UNIQUE_HOLDER.unpack(data)
        if ends_ms and ends_ms <= now_ms:
            return None
        return keys.job_id_from(queue_name, uuid_bytes)

    def _let_go_of_key(self, job: JobRecord) -> None:
        """The job no longer holds its unique key: free it, unless another job has taken
        it since (a duration ran out)."""
        assert job.unique_key is not None
        key = keys.unique_key(job.queue_name, job.unique_key)
        data = reads.get(self.txn, key, self._store.unique_db)
        if data is not None and data[:16] == keys.job_uuid_bytes(job.job_id):
            self.txn.delete(key, db=self._store.unique_db)

    def _group_moved(self, job: JobRecord, queue_prefix: bytes, before: JobStatus | None,
                     after: JobStatus | None) -> None:
        """Keep the job's group counts and turn in step with its move."""
        deltas = _GROUP_DELTAS.get((before, after))
        if deltas is not None:
            assert job.group is not None
            limits = self._group_limits
            queue_name = job.queue_name
            limit = limits[queue_name] if queue_name in limits else self.group_limit(queue_name)
            self.groups.change(queue_prefix, job.group, deltas[0], deltas[1], limit)

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
            self._unindex(job, prefixes, uuid_bytes, before)
            self._index(job, prefixes, uuid_bytes)
            if status != previous_status:
                self._bump(prefixes[previous_status], -1)
                self._bump(prefixes[status], 1)
                if job.group is not None:
                    self._group_moved(job, prefixes[0], previous_status, status)
                if (job.unique_key is not None and job.unique_scope is not None
                        and holds_key(job.unique_scope, previous_status)
                        and not holds_key(job.unique_scope, status)):
                    self._let_go_of_key(job)
        return data

    def delete_job(self, job: JobRecord) -> None:
        self.txn.delete(job.job_id.encode(), db=self._store.jobs_db)
        prefixes = keys.queue_prefixes(job.queue_name)
        self._unindex(job, prefixes, keys.job_uuid_bytes(job.job_id), index_state(job))
        self._bump(prefixes[job.status], -1)
        if job.group is not None:
            self._group_moved(job, prefixes[0], job.status, None)
        if job.unique_key is not None:
            self._let_go_of_key(job)

    def finished_job_ids(self, queue_name: str, status: JobStatus, limit: int
                         ) -> list[tuple[int, str]]:
        """Up to `limit` (finish ms, job id) of finished jobs of one status, earliest first."""
        prefix = keys.status_prefix(queue_name, status)
        cursor = self.txn.cursor(db=self._store.by_finish)
        found: list[tuple[int, str]] = []
        if not cursor.set_range(prefix):
            return found
        for key in reads.keys_from(cursor):
            if not key.startswith(prefix) or len(found) >= limit:
                break
            finished_ms, uuid_bytes = keys.split_finish_key(queue_name, key)
            found.append((finished_ms, keys.job_id_from(queue_name, uuid_bytes)))
        return found

    def oldest_job_ids(self, queue_name: str, status: JobStatus, limit: int,
                       before: bytes | None = None, after: bytes | None = None) -> list[str]:
        """Up to `limit` job ids of one status in index order: oldest first (for `waiting`:
        highest priority first, oldest first within one); with `before`, only those whose
        uuid bytes sort below it; with `after` (not for `waiting`, which is not in uuid
        order), only those above it."""
        prefix = keys.status_prefix(queue_name, status)
        cursor = self.txn.cursor(db=self._store.by_status)
        found: list[str] = []
        if status == JobStatus.WAITING:
            if after is not None:
                raise RuntimeError("waiting entries are in priority order: no 'after'")
            if before is not None:
                # One FIFO range per priority rank, each cut at `before`.
                for head in list(reads.rank_heads(self.txn.cursor(db=self._store.by_status),
                                                  prefix)):
                    if len(found) >= limit:
                        break
                    self._collect(cursor, head, head[:len(prefix) + 1] + before, queue_name,
                                  limit, found)
                return found
        start = prefix if after is None else prefix + after + b"\x00"
        self._collect(cursor, start, None if before is None else prefix + before,
                      queue_name, limit, found)
        return found

    @staticmethod
    def _collect(cursor: lmdb.Cursor, start: bytes, bound: bytes | None, queue_name: str,
                 limit: int, found: list[str]) -> None:
        """Job ids of the keys from `start` on that share its prefix up to the status (and
        rank) and sort below `bound`, until `found` holds `limit`."""
        prefix = start[:len(keys.queue_prefix(queue_name)) + 1]
        if not cursor.set_range(start):
            return
        for key in reads.keys_from(cursor):
            if not key.startswith(prefix) or len(found) >= limit:
                break
            if bound is not None and key >= bound:
                break
            found.append(keys.job_id_from(queue_name, key[-16:]))

    def oldest_waiting_id(self, queue_name: str) -> str | None:
        """The ungrouped waiting job created first, whatever its priority (the fair-share
        pick)."""
        key = reads.oldest_waiting_key(self.txn.cursor(db=self._store.by_status),
                                       keys.status_prefix(queue_name, JobStatus.WAITING),
                                       below=GROUPED_RANK)
        return None if key is None else keys.job_id_from(queue_name, key[-16:])

    def first_ungrouped_waiting_id(self, queue_name: str) -> str | None:
        """The ungrouped waiting job dispatched next: highest priority, then oldest."""
        prefix = keys.status_prefix(queue_name, JobStatus.WAITING)
        cursor = self.txn.cursor(db=self._store.by_status)
        if not cursor.set_range(prefix):
            return None
        key = reads.key_at(cursor)
        if not key.startswith(prefix) or key[len(prefix)] >= GROUPED_RANK:
            return None
        return keys.job_id_from(queue_name, key[-16:])

    def group_waiting_id(self, queue_name: str, group: str, oldest: bool) -> str | None:
        """The group's waiting job dispatched next (highest priority, then oldest), or with
        `oldest` the one created first (the group's fair-share pick)."""
        prefix = group_waiting_prefix(keys.queue_prefix(queue_name), group)
        cursor = self._group_waiting_cursor
        if cursor is None:
            cursor = self._group_waiting_cursor = self.txn.cursor(db=self._store.group_waiting)
        if oldest:
            key = reads.oldest_waiting_key(cursor, prefix)
        elif cursor.set_range(prefix) and reads.key_at(cursor).startswith(prefix):
            key = reads.key_at(cursor)
        else:
            key = None
        return None if key is None else keys.job_id_from(queue_name, key[-16:])

    def due_job_ids(self, queue_name: str, now_ms: int, limit: int) -> list[str]:
        """Up to `limit` delayed job ids whose start time is at or before `now_ms`."""
        prefix = keys.queue_prefix(queue_name)
        bound = keys.time_key_due_bound(queue_name, now_ms)
        cursor = self.txn.cursor(db=self._store.by_time)
        found: list[str] = []
        if not cursor.set_range(prefix):
            return found
        for key in reads.keys_from(cursor):
            if key >= bound or not key.startswith(prefix) or len(found) >= limit:
                break
            found.append(keys.job_id_from(queue_name, keys.split_time_key(queue_name, key)[1]))
        return found

    def first_due_ms(self, queue_name: str) -> int | None:
        prefix = keys.queue_prefix(queue_name)
        cursor = self.txn.cursor(db=self._store.by_time)
        if cursor.set_range(prefix) and reads.key_at(cursor).startswith(prefix):
            return keys.split_time_key(queue_name, reads.key_at(cursor))[0]
        return None

    # -- index and counter upkeep ------------------------------------------------------

    def _index(self, job: JobRecord, prefixes: tuple[bytes, ...], uuid_bytes: bytes) -> None:
        store = self._store
        status = job.status
        if status == JobStatus.WAITING:
            rank = priority_rank(job.priority)
            if job.group is None:
                self.txn.put(keys.waiting_key(prefixes, rank, uuid_bytes), b"",
                             db=store.by_status)
                return
            self.txn.put(keys.waiting_key(prefixes, rank | GROUPED_RANK, uuid_bytes), b"",
                         db=store.by_status)
            self.txn.put(group_waiting_prefix(prefixes[0], job.group) + bytes((rank,))
                         + uuid_bytes, b"", db=store.group_waiting)
            return
        self.txn.put(prefixes[status] + uuid_bytes, b"", db=store.by_status)
        if status == JobStatus.DELAYED:
            self.txn.put(keys.timed_key(prefixes[0], job.execution_start_at_ms, uuid_bytes),
                         b"", db=store.by_time)
        elif status in FINISHED_STATUSES:
            self.txn.put(keys.timed_key(prefixes[status], job.finished_at_ms or 0, uuid_bytes),
                         b"", db=store.by_finish)

    def _unindex(self, job: JobRecord, prefixes: tuple[bytes, ...], uuid_bytes: bytes,
                 before: "IndexState") -> None:
        store = self._store
        status, start_ms, finished_ms, priority = before
        if status == JobStatus.WAITING:
            rank = priority_rank(priority)
            if job.group is None:
                self.txn.delete(keys.waiting_key(prefixes, rank, uuid_bytes),
                                db=store.by_status)
                return
            self.txn.delete(keys.waiting_key(prefixes, rank | GROUPED_RANK, uuid_bytes),
                            db=store.by_status)
            self.txn.delete(group_waiting_prefix(prefixes[0], job.group) + bytes((rank,))
                            + uuid_bytes, db=store.group_waiting)
            return
        self.txn.delete(prefixes[status] + uuid_bytes, db=store.by_status)
        if status == JobStatus.DELAYED:
            self.txn.delete(keys.timed_key(prefixes[0], start_ms, uuid_bytes), db=store.by_time)
        elif status in FINISHED_STATUSES:
            self.txn.delete(keys.timed_key(prefixes[status], finished_ms or 0, uuid_bytes),
                            db=store.by_finish)

    def _bump(self, counter_key: bytes, delta: int) -> None:
        deltas = self._counter_deltas
        deltas[counter_key] = deltas.get(counter_key, 0) + delta

    def flush_counters(self) -> None:
        """Write the summed counter changes (and the group records changed); the writer
        calls this right before commit."""
        self.groups.flush()
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

