"""Results without polling: connections that wait for a job's final outcome.

A connection watches a job (WATCH, or ENQUEUE with `watch`) and is told once, with a
RESULT push, when the job completes, fails for good, is cancelled or is removed; the
watch then ends.
The outcome is pushed once its commit is durable, like an OK. Nobody watching costs one
empty-dict test per ending job; a connection may watch at most
`MAX_WATCHES_PER_CONNECTION` jobs at once.
"""

import asyncio

from overhop.broker.events import FinalStatus, JobFinished
from overhop.broker.workers import Worker
from overhop.errors import ErrorCode, RequestError
from overhop.logs import get_logger
from overhop.model.jobs import JobRecord, JobStatus
from overhop.storage import operations as ops
from overhop.storage.reads import StoreReads
from overhop.storage.writer import Writer

log = get_logger("overhop.broker")

# Enough for a producer waiting on a large batch of its jobs; each watch costs a set entry.
MAX_WATCHES_PER_CONNECTION = 10_000
_FINAL = {JobStatus.COMPLETED: FinalStatus.COMPLETED, JobStatus.FAILED: FinalStatus.FAILED,
          JobStatus.CANCELLED: FinalStatus.CANCELLED}


class Watches:
    def __init__(self, store: StoreReads, writer: Writer) -> None:
        self._store = store
        self._writer = writer
        self._watchers: dict[str, set[Worker]] = {}
        # Reads running for `finished_from_store` (kept so they are not collected).
        self._reading: set[asyncio.Task[None]] = set()

    def add(self, worker: Worker, job_ids: list[str]) -> None:
        """Watch jobs that are not finished yet (their outcomes come through `finished`):
        all of them, or none when that would pass the connection's limit."""
        if len(worker.watching) + len(job_ids) > MAX_WATCHES_PER_CONNECTION:
            raise RequestError(ErrorCode.WATCH_LIMIT,
                               f"a connection may watch at most {MAX_WATCHES_PER_CONNECTION} "
                               "jobs at once; wait for some results or UNWATCH")
        for job_id in job_ids:
            worker.watching.add(job_id)
            self._watchers.setdefault(job_id, set()).add(worker)

    def watch(self, worker: Worker, job_id: str) -> "asyncio.Future[None]":
        """WATCH: the job's outcome is pushed when it ends, or now if it has ended; the
        future resolves once the watch is set (it fails with JOB_NOT_FOUND or WATCH_LIMIT).

        The job is read from the store, which takes an await; the watch is set before the
        read, so an end that becomes durable meanwhile is told through `finished`. A job
        that has ended already is told once that state is durable (a barrier commit), so
        the push never runs ahead of the disk."""
        added = job_id not in worker.watching
        if added:
            self.add(worker, [job_id])
        return asyncio.ensure_future(self._watch_stored(worker, job_id, added))

    async def _watch_stored(self, worker: Worker, job_id: str, added: bool) -> None:
        job = await self._store.get_job(job_id)
        if job is None:
            if added:
                self.remove(worker, job_id)
            raise RequestError(ErrorCode.JOB_NOT_FOUND, f"no job {job_id!r}")
        final = _FINAL.get(job.status)
        if final is None:
            return
        if job_id not in worker.watching:  # told by `finished` while the read ran
            return
        self.remove(worker, job_id)
        event = _event(job, final)
        await self._writer.submit(ops.Barrier()).durable
        if not worker.gone:
            worker.peer.job_finished(event)

    def remove(self, worker: Worker, job_id: str) -> None:
        worker.watching.discard(job_id)
        watchers = self._watchers.get(job_id)
        if watchers is not None:
            watchers.discard(worker)
            if not watchers:
                del self._watchers[job_id]

    def worker_gone(self, worker: Worker) -> None:
        for job_id in list(worker.watching):
            self.remove(worker, job_id)

    def finished(self, job_id: str, status: FinalStatus, *, result: bytes | None = None,
                 job: JobRecord | None = None) -> None:
        """The job's final outcome is durable: tell its watchers, end their watches."""
        if not self._watchers:
            return
        watchers = self._watchers.pop(job_id, None)
        if watchers is None:
            return
        event = JobFinished(job_id, status, result, job)
        for worker in watchers:
            worker.watching.discard(job_id)
            if not worker.gone:
                worker.peer.job_finished(event)

    def finished_from_store(self, job_id: str, status: FinalStatus) -> None:
        """`finished`, with the job's record read from the store first (if anyone
        watches it)."""
        if job_id not in self._watchers:
            return

        async def tell() -> None:
            self.finished(job_id, status, job=await self._store.get_job(job_id))

        task = asyncio.get_running_loop().create_task(tell())
        self._reading.add(task)
        task.add_done_callback(self._reading.discard)

    async def queue_emptied(self, queue_name: str) -> None:
        """A clear, obliterate or bulk action ended or removed jobs of the queue: watchers
        of jobs now gone are told `removed`, of jobs now cancelled `cancelled` (watched
        jobs are few; each is one read)."""
        prefix = f"{queue_name}:"
        for job_id in [jid for jid in self._watchers if jid.startswith(prefix)]:
            job = await self._store.get_job(job_id)
            if job is None:
                self.finished(job_id, FinalStatus.REMOVED)
            elif job.status == JobStatus.CANCELLED:
                self.finished(job_id, FinalStatus.CANCELLED, job=job)


def _event(job: JobRecord, status: FinalStatus) -> JobFinished:
    if status == FinalStatus.COMPLETED:
        return JobFinished(job.job_id, status, job.result)
    return JobFinished(job.job_id, status, job=job)
