"""What happens after an attempt ends without success: the backoff plan. Pure."""

import random

from overhop.broker.jobs import AttemptOutcome, JobRecord, JobStatus

# An exponential backoff with no cap of its own stops growing at one hour: longer than any
# outage worth waiting out automatically, short enough that a job is not forgotten.
DEFAULT_BACKOFF_CAP_MS = 3_600_000


def backoff_delay_ms(job: JobRecord, attempts_used: int, rng: random.Random) -> int:
    """The wait before attempt `attempts_used + 1`, from the job's retry policy."""
    policy = job.backoff or {}
    delay = job.retry_interval_ms
    if policy.get("kind") == "exponential":
        cap = policy.get("max_ms") or max(DEFAULT_BACKOFF_CAP_MS, job.retry_interval_ms)
        delay = min(cap, job.retry_interval_ms * 2 ** min(attempts_used - 1, 40))
    elif policy.get("max_ms"):
        delay = min(delay, policy["max_ms"])
    if policy.get("jitter"):
        # "Equal jitter": keep half the delay, randomise the other half, so retries of jobs
        # that failed together spread out but none comes back sooner than half the plan.
        delay = delay // 2 + rng.randint(0, delay - delay // 2)
    return delay


def plan_after_attempt(job: JobRecord, outcome: AttemptOutcome, now_ms: int,
                       rng: random.Random) -> tuple[JobStatus, int, int]:
    """(next status, next execution start, attempts used) for an attempt that did not complete."""
    if not outcome.uses_attempt:
        return JobStatus.WAITING, job.execution_start_at_ms, job.attempts_so_far
    attempts = job.attempts_so_far + 1
    if attempts >= job.max_attempts:
        return JobStatus.FAILED, job.execution_start_at_ms, attempts
    return JobStatus.DELAYED, now_ms + backoff_delay_ms(job, attempts, rng), attempts
