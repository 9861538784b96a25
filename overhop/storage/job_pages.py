"""A page of LSJOB from the job records of one status in index order, plain or filtered by
task: the same rules on both engines (`Store.list_jobs` and `list_task_jobs`, and
`PgReads`'s), which only differ in how they read the records."""

from collections.abc import Iterable

from overhop.model.jobs import JobRecord
from overhop.storage.records import decode_job

# The jobs found; whether `max_bytes` cut the page short; whether more jobs follow.
JobPage = tuple[list[JobRecord], bool, bool]
# The jobs found; whether `max_bytes` cut the page short; the job id to go on after (None
# once the status is walked to its end).
TaskPage = tuple[list[JobRecord], bool, str | None]


def status_page(found: Iterable[tuple[str, bytes | None]], limit: int, max_bytes: int
                ) -> JobPage:
    """The page from `found` (job id and stored record, None for a record gone, in index
    order from the page's start, read lazily): at most `limit` jobs, cut short once they
    hold `max_bytes` of records."""
    jobs: list[JobRecord] = []
    held = 0
    for _, data in found:
        if len(jobs) >= limit:
            return jobs, False, True
        if data is None:
            continue
        held += len(data)
        if jobs and held > max_bytes:
            return jobs, True, True
        jobs.append(decode_job(data))
    return jobs, False, False


def task_page(found: Iterable[tuple[str, bytes | None]], task: str, limit: int,
              max_bytes: int, max_read: int) -> TaskPage:
    """The page from `found` (job id and stored record, None for a record gone, in index
    order, read lazily): at most `limit` jobs of `task`, at most `max_read` records read."""
    jobs: list[JobRecord] = []
    held = 0
    last_read: str | None = None
    for read, (job_id, data) in enumerate(found):
        if len(jobs) >= limit:
            return jobs, False, jobs[-1].job_id
        if read >= max_read:
            return jobs, False, last_read
        last_read = job_id
        if data is None:
            continue
        job = decode_job(data)
        if job.task != task:
            continue
        held += len(data)
        if jobs and held > max_bytes:
            return jobs, True, jobs[-1].job_id
        jobs.append(job)
    return jobs, False, None
