"""What the server reads from storage, as one small async interface both engines answer.

An LMDB read is a few microseconds in the server's own process, a PostgreSQL read a round
trip to another; the server must never wait for the latter on its event loop, so every read
it makes at run time is awaited. `LmdbReads` answers at once (its coroutines never suspend);
`postgres.reads.PgReads` asks the database. None of these reads is on the path of an
enqueue, a dispatch or a completion: those only write.
"""

from typing import Protocol

from overhop.auth.users import UserRecord
from overhop.model.jobs import JobRecord, JobStatus
from overhop.model.queues import QueueRecord
from overhop.model.schedules import ScheduleRecord
from overhop.storage.job_pages import JobPage, TaskPage
from overhop.storage.schedule_records import load_schedules
from overhop.storage.store import StorageUsage, Store
from overhop.storage.user_records import load_users


class StoreReads(Protocol):
    """The reads of `Store` (see there for each one's meaning), awaited."""

    # True when every read answers without suspending (LMDB): a handler may then run its
    # reads to their end at once and reply in the same turn.
    immediate: bool

    async def load_queues(self) -> list[QueueRecord]: ...

    async def get_job(self, job_id: str) -> JobRecord | None: ...

    async def counts(self, queue_name: str) -> dict[JobStatus, int]: ...

    async def list_jobs(self, queue_name: str, status: JobStatus, offset: int, limit: int,
                        max_bytes: int, after: bytes | None = None) -> JobPage: ...

    async def list_task_jobs(self, queue_name: str, status: JobStatus, task: str, limit: int,
                             max_bytes: int, max_read: int, after: bytes | None = None
                             ) -> TaskPage: ...

    async def group_active(self, queue_name: str, group: str) -> int: ...

    async def oldest_created_ms(self, queue_name: str, status: JobStatus) -> int | None: ...

    async def first_due_ms(self, queue_name: str) -> int | None: ...

    async def usage(self) -> StorageUsage: ...

    async def load_schedules(self, limit: int) -> list[ScheduleRecord]: ...

    async def load_users(self) -> tuple[list[UserRecord], bytes | None]: ...

    async def close(self) -> None: ...


class LmdbReads:
    """`StoreReads` of an LMDB `Store`: each answer is ready at once."""

    __slots__ = ("store",)
    immediate = True

    def __init__(self, store: Store) -> None:
        self.store = store

    async def load_queues(self) -> list[QueueRecord]:
        return self.store.load_queues()

    async def get_job(self, job_id: str) -> JobRecord | None:
        return self.store.get_job(job_id)

    async def counts(self, queue_name: str) -> dict[JobStatus, int]:
        return self.store.counts(queue_name)

    async def list_jobs(self, queue_name: str, status: JobStatus, offset: int, limit: int,
                        max_bytes: int, after: bytes | None = None) -> JobPage:
        return self.store.list_jobs(queue_name, status, offset, limit, max_bytes, after)

    async def list_task_jobs(self, queue_name: str, status: JobStatus, task: str, limit: int,
                             max_bytes: int, max_read: int, after: bytes | None = None
                             ) -> TaskPage:
        return self.store.list_task_jobs(queue_name, status, task, limit, max_bytes,
                                         max_read, after)

    async def group_active(self, queue_name: str, group: str) -> int:
        return self.store.group_active(queue_name, group)

    async def oldest_created_ms(self, queue_name: str, status: JobStatus) -> int | None:
        return self.store.oldest_created_ms(queue_name, status)

    async def first_due_ms(self, queue_name: str) -> int | None:
        return self.store.first_due_ms(queue_name)

    async def usage(self) -> StorageUsage:
        return self.store.usage()

    async def load_schedules(self, limit: int) -> list[ScheduleRecord]:
        return load_schedules(self.store, limit)

    async def load_users(self) -> tuple[list[UserRecord], bytes | None]:
        return load_users(self.store)

    async def close(self) -> None:
        self.store.close()
