"""What happens after an attempt ends without success: the backoff plan. Pure."""

import random

from overhop.model.jobs import AttemptOutcome, JobRecord, JobStatus
from overhop.model.queues import BackoffKind, JobPolicy

# An exponential backoff with no cap of its own stops growing at one hour (or at the retry
# interval, if that is longer): longer than any outage worth waiting out automatically,
# short enough that a job is not forgotten.
DEFAULT_BACKOFF_CAP_MS = 3_600_000


def backoff_delay_ms(policy: JobPolicy, attempts_used: int, rng: random.Random) -> int:
    """The wait before attempt `attempts_used + 1`."""
    interval = policy.retry_interval_ms
    delay = interval
    if policy.backoff == BackoffKind.EXPONENTIAL:
        cap = policy.backoff_max_ms or max(DEFAULT_BACKOFF_CAP_MS, interval)
        delay = min(cap, interval * 2 ** min(attempts_used - 1, 40))
    elif policy.backoff_max_ms:
        delay = min(delay, policy.backoff_max_ms)
    if policy.backoff_jitter:
        # "Equal jitter": keep half the delay, randomise the other half, so retries of jobs
        # that failed together spread out but none comes back sooner than half the plan.
        delay = delay // 2 + rng.randint(0, delay - delay // 2)
    return delay


def plan_after_attempt(job: JobRecord, policy: JobPolicy, outcome: AttemptOutcome,
                       now_ms: int, rng: random.Random) -> tuple[JobStatus, int, int]:
    """(next status, next execution start, attempts used) for an attempt that did not complete."""
    if not outcome.uses_attempt:
        return JobStatus.WAITING, job.execution_start_at_ms, job.attempts_so_far
    attempts = job.attempts_so_far + 1
    if attempts >= policy.max_attempts:
        return JobStatus.FAILED, job.execution_start_at_ms, attempts
    return JobStatus.DELAYED, now_ms + backoff_delay_ms(policy, attempts, rng), attempts
