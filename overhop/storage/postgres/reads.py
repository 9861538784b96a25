"""The server's reads on PostgreSQL (`StoreReads`), over a small pool of async connections.

Each read is one or two statements on the primary key of `overhop_kv`, in autocommit (it
sees committed data only, like an LMDB read transaction). The results are those of the LMDB
`Store`'s reads of the same keys: both engines hold the same layout.

A pooled connection that broke while it waited (the database restarted, or failed over to
a standby: a multi-host DSN with `target_session_attrs=read-write` finds the new primary)
is replaced, and a read it failed is run once more on the new one; a read changes nothing,
so that is safe. A read that still cannot be made raises STORAGE_UNAVAILABLE (an ERR: the
client's connection stays open), and the next read tries a new connection again.
"""

import asyncio
from collections.abc import Sequence
from typing import Any

import psycopg

from overhop.auth.users import UserRecord
from overhop.logs import get_logger
from overhop.model.jobs import MAX_PRIORITY, MIN_PRIORITY, JobRecord, JobStatus
from overhop.model.queues import QueueRecord
from overhop.model.schedules import ScheduleRecord
from overhop.storage import keys
from overhop.storage.group_index import decode_group_counts
from overhop.storage.job_pages import JobPage, TaskPage, status_page, task_page
from overhop.storage.keys import GROUPED_RANK
from overhop.storage.postgres.schema import Space
from overhop.storage.postgres.store import PgStore
from overhop.storage.postgres.unavailable import UNAVAILABLE, described, read_refused
from overhop.storage.records import decode_job, decode_queue
from overhop.storage.schedule_records import decode_schedule
from overhop.storage.store import StorageUsage
from overhop.storage.user_records import decode_user

_GET = "SELECT value FROM overhop_kv WHERE space = %s AND key = %s"
_GET_MANY = "SELECT key, value FROM overhop_kv WHERE space = %s AND key = ANY(%s)"
_SPACE = "SELECT key, value FROM overhop_kv WHERE space = %s ORDER BY key LIMIT %s"
_RANGE_KEYS = ("SELECT key FROM overhop_kv WHERE space = %s AND key >= %s AND key < %s "
               "ORDER BY key LIMIT %s")
# The first entry of each priority rank of a `waiting` prefix: one index seek per rank.
_RANK_HEADS = ("SELECT head.key FROM unnest(%s::bytea[], %s::bytea[]) AS r(lo, hi) "
               "CROSS JOIN LATERAL (SELECT key FROM overhop_kv WHERE space = %s "
               "AND key >= r.lo AND key < r.hi ORDER BY key LIMIT 1) AS head")
log = get_logger("overhop.storage")

_RANKS = [rank for base in (0, GROUPED_RANK)
          for rank in range(base, base + MAX_PRIORITY - MIN_PRIORITY + 1)]


async def _fetch(conn: psycopg.AsyncConnection, sql: str, params: Sequence[Any]
                 ) -> list[tuple[Any, ...]]:
    cursor = await conn.execute(sql, params)
    return await cursor.fetchall()


def prefix_end(prefix: bytes) -> bytes:
    """The least key above every key that starts with `prefix`."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return b"\xff" * (len(prefix) + 1)
    return trimmed[:-1] + bytes((trimmed[-1] + 1,))


class PgReads:
    """`StoreReads` over PostgreSQL; owns the server's `PgStore` (its lock) too."""

    immediate = False

    def __init__(self, store: PgStore, connections: list[psycopg.AsyncConnection]) -> None:
        self.store = store
        self._idle: asyncio.Queue[psycopg.AsyncConnection] = asyncio.Queue()
        self._all = connections
        for conn in connections:
            self._idle.put_nowait(conn)

    @classmethod
    async def open(cls, store: PgStore, pool_size: int) -> "PgReads":
        connections: list[psycopg.AsyncConnection] = []
        try:
            for _ in range(pool_size):
                connections.append(await psycopg.AsyncConnection.connect(
                    store.dsn, autocommit=True, application_name="overhop-reads"))
        except BaseException:
            for conn in connections:
                await conn.close()
            raise
        return cls(store, connections)

    async def _rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        conn = await self._idle.get()
        try:
            if conn.broken or conn.closed:
                conn = await self._replace(conn)
            try:
                return await _fetch(conn, sql, params)
            except psycopg.OperationalError:
                if not conn.broken:
                    raise
            # Broken since its last use (see the module): once more, on a new connection.
            conn = await self._replace(conn)
            return await _fetch(conn, sql, params)
        except UNAVAILABLE as exc:
            log.warning("storage_read_failed", error=described(exc))
            raise read_refused() from None
        finally:
            self._idle.put_nowait(conn)

    async def _replace(self, old: psycopg.AsyncConnection) -> psycopg.AsyncConnection:
        """A new connection in `old`'s place in the pool. Should none be had, `old` stays
        (closed), and its next use tries again."""
        await old.close()
        new = await psycopg.AsyncConnection.connect(
            self.store.dsn, autocommit=True, application_name="overhop-reads")
        self._all[self._all.index(old)] = new
        return new

    async def _value(self, space: Space, key: bytes) -> bytes | None:
        rows = await self._rows(_GET, (space, key))
        return rows[0][0] if rows else None

    async def _range_keys(self, space: Space, start: bytes, prefix: bytes, limit: int
                          ) -> list[bytes]:
        rows = await self._rows(_RANGE_KEYS, (space, start, prefix_end(prefix), limit))
        return [row[0] for row in rows]

    async def _jobs(self, job_ids: list[str]) -> dict[str, bytes]:
        if not job_ids:
            return {}
        rows = await self._rows(_GET_MANY, (Space.JOBS, [j.encode() for j in job_ids]))
        return {key.decode(): value for key, value in rows}

    # -- the reads ---------------------------------------------------------------------

    async def load_queues(self) -> list[QueueRecord]:
        rows = await self._rows(_SPACE, (Space.QUEUES, None))
        return [decode_queue(value) for _, value in rows]

    async def get_job(self, job_id: str) -> JobRecord | None:
        data = await self._value(Space.JOBS, job_id.encode())
        return None if data is None else decode_job(data)

    async def counts(self, queue_name: str) -> dict[JobStatus, int]:
        wanted = {keys.counter_key(queue_name, status): status for status in JobStatus}
        rows = await self._rows(_GET_MANY, (Space.COUNTERS, list(wanted)))
        counts = dict.fromkeys(JobStatus, 0)
        for key, value in rows:
            counts[wanted[key]] = keys.U64.unpack(value)[0]
        return counts

    async def _page_start(self, queue_name: str, status: JobStatus, after: bytes | None
                          ) -> bytes:
        prefix = keys.status_prefix(queue_name, status)
        if after is None:
            return prefix
        if status == JobStatus.WAITING:
            job = await self.get_job(keys.job_id_from(queue_name, after))
            prefix += bytes((keys.listed_rank(job),))
        return prefix + after + b"\x00"

    async def list_jobs(self, queue_name: str, status: JobStatus, offset: int, limit: int,
                        max_bytes: int, after: bytes | None = None) -> JobPage:
        prefix = keys.status_prefix(queue_name, status)
        start = await self._page_start(queue_name, status, after)
        entries = await self._range_keys(Space.BY_STATUS, start, prefix, offset + limit + 1)
        page = [keys.job_id_from(queue_name, key[-16:]) for key in entries[offset:]]
        records = await self._jobs(page)
        return status_page(((job_id, records.get(job_id)) for job_id in page), limit,
                           max_bytes)

    async def list_task_jobs(self, queue_name: str, status: JobStatus, task: str, limit: int,
                             max_bytes: int, max_read: int, after: bytes | None = None
                             ) -> TaskPage:
        prefix = keys.status_prefix(queue_name, status)
        start = await self._page_start(queue_name, status, after)
        entries = await self._range_keys(Space.BY_STATUS, start, prefix, max_read + 1)
        page = [keys.job_id_from(queue_name, key[-16:]) for key in entries]
        records = await self._jobs(page[:max_read])
        return task_page(((job_id, records.get(job_id)) for job_id in page), task, limit,
                         max_bytes, max_read)

    async def group_active(self, queue_name: str, group: str) -> int:
        data = await self._value(Space.GROUPS, keys.queue_prefix(queue_name) + group.encode())
        return 0 if data is None else decode_group_counts(data).active

    async def oldest_created_ms(self, queue_name: str, status: JobStatus) -> int | None:
        prefix = keys.status_prefix(queue_name, status)
        if status == JobStatus.WAITING:
            los = [prefix + bytes((rank,)) for rank in _RANKS]
            his = [prefix + bytes((rank + 1,)) for rank in _RANKS]
            rows = await self._rows(_RANK_HEADS, (los, his, Space.BY_STATUS))
            heads = [row[0] for row in rows]
            key = min(heads, key=lambda head: head[-16:], default=None)
        else:
            found = await self._range_keys(Space.BY_STATUS, prefix, prefix, 1)
            key = found[0] if found else None
        return None if key is None else int.from_bytes(key[-16:-10], "big")

    async def first_due_ms(self, queue_name: str) -> int | None:
        prefix = keys.queue_prefix(queue_name)
        found = await self._range_keys(Space.BY_TIME, prefix, prefix, 1)
        return keys.split_time_key(queue_name, found[0])[0] if found else None

    async def usage(self) -> StorageUsage:
        rows = await self._rows("SELECT pg_database_size(current_database()), "
                                "pg_total_relation_size('overhop_kv')", ())
        database, table = rows[0]
        return StorageUsage(path=self.store.described, map_size_bytes=0, used_bytes=table,
                            file_bytes=database)

    async def load_schedules(self, limit: int) -> list[ScheduleRecord]:
        rows = await self._rows(_SPACE, (Space.SCHEDULES, limit))
        return [decode_schedule(value) for _, value in rows]

    async def load_users(self) -> tuple[list[UserRecord], bytes | None]:
        rows = await self._rows(_SPACE, (Space.USERS, None))
        users: list[UserRecord] = []
        secret: bytes | None = None
        for key, value in rows:
            if key == keys.USERS_SECRET:
                secret = bytes(value)
            else:
                users.append(decode_user(bytes(value)))
        return users, secret

    async def close(self) -> None:
        for conn in self._all:
            await conn.close()
        self.store.close()
