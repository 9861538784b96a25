"""`PgStoreTxn`: the LMDB engine's write primitives (`StoreTxn`) over a `PgKv`, plus the
prefetches that turn a dispatch's or a batch's record reads into one statement each."""

from typing import Any

from overhop.model.jobs import JobStatus
from overhop.storage.postgres.kv import PgKv
from overhop.storage.postgres.schema import Space
from overhop.storage.store_txn import StoreTxn


class PgSpaces:
    """The spaces under the names `StoreTxn` gives LMDB's named databases (`Store`)."""

    # Typed Any like the values `StoreTxn` hands to its transaction's calls.
    meta: Any = Space.META
    queues_db: Any = Space.QUEUES
    jobs_db: Any = Space.JOBS
    by_status: Any = Space.BY_STATUS
    by_time: Any = Space.BY_TIME
    by_finish: Any = Space.BY_FINISH
    counters_db: Any = Space.COUNTERS
    users_db: Any = Space.USERS
    schedules_db: Any = Space.SCHEDULES
    unique_db: Any = Space.UNIQUE
    groups_db: Any = Space.GROUPS
    group_ring: Any = Space.GROUP_RING
    group_waiting: Any = Space.GROUP_WAITING


SPACES = PgSpaces()


class PgStoreTxn(StoreTxn):
    """`StoreTxn` whose index scans also read the job records they name, in one statement:
    a dispatch of 256 jobs reads its index range and then its records, two round trips."""

    __slots__ = ()

    def __init__(self, kv: PgKv) -> None:
        super().__init__(SPACES, kv)

    def prefetch_jobs(self, job_ids: list[str]) -> None:
        if len(job_ids) > 1:
            self.txn.prefetch(Space.JOBS, [job_id.encode() for job_id in job_ids])

    def oldest_job_ids(self, queue_name: str, status: JobStatus, limit: int,
                       before: bytes | None = None, after: bytes | None = None) -> list[str]:
        found = super().oldest_job_ids(queue_name, status, limit, before, after)
        self.prefetch_jobs(found)
        return found

    def due_job_ids(self, queue_name: str, now_ms: int, limit: int) -> list[str]:
        found = super().due_job_ids(queue_name, now_ms, limit)
        self.prefetch_jobs(found)
        return found

    def finished_job_ids(self, queue_name: str, status: JobStatus, limit: int
                         ) -> list[tuple[int, str]]:
        found = super().finished_job_ids(queue_name, status, limit)
        self.prefetch_jobs([job_id for _, job_id in found])
        return found
