"""Unique jobs and groups: ENQUEUE's optional `unique_key` (with its scope) and `group`.

A unique key is held by one live job of a queue at a time. While it is held, an ENQUEUE
with the same key adds nothing and answers with the holder's id (`duplicate: true`). The
scope says when the holder lets go:

- `start`: when the job first starts (or ends or is removed before it does);
- `finish` (the default): when the job ends (completed, failed for good, cancelled) or
  is removed;
- a duration (`unique_ttl_ms`): that long after the ENQUEUE, whatever the job does, or
  sooner if the job is cancelled or removed.

A key let go is never taken back by its job (a RETRY does not take it again). A group is a
tenant, a customer, an account: a queue's `group_concurrency_limit` caps the active jobs
of each group, and dispatch serves the groups in turn (docs/scheduling.md).
"""

from enum import IntEnum
from typing import Any

from overhop.errors import ErrorCode, RequestError
from overhop.model.jobs import FINISHED_STATUSES, JobRecord, JobStatus

# Keys and group names are stored in index keys and with every job: short, but room for a
# hash, a URL path or an e-mail address.
MAX_UNIQUE_KEY_BYTES = 256
MAX_GROUP_BYTES = 128
# A week: longer throttles belong in the application's own data.
MAX_UNIQUE_TTL_MS = 7 * 86_400_000


class UniqueScope(IntEnum):
    """How long a job holds its unique key. The numbers are stored: never renumber."""

    START = 1
    FINISH = 2
    TTL = 3

    @property
    def label(self) -> str:
        return self.name.lower()


_NOT_STARTED = frozenset({JobStatus.NEW, JobStatus.WAITING, JobStatus.DELAYED})


def holds_key(scope: int, status: JobStatus) -> bool:
    """Whether a job of this scope in this status still holds its key (once it has let go,
    it never takes it back: see `StoreTxn`)."""
    if scope == UniqueScope.START:
        return status in _NOT_STARTED
    if scope == UniqueScope.FINISH:
        return status not in FINISHED_STATUSES
    return status != JobStatus.CANCELLED


def parse_unique(p: dict[str, Any], now_ms: int
                 ) -> tuple[str | None, UniqueScope | None, int | None]:
    """ENQUEUE's `unique_key`, `unique_until` and `unique_ttl_ms`: the key, its scope and
    when a duration ends (all None without a key)."""
    key = p.get("unique_key")
    until = p.get("unique_until")
    ttl = p.get("unique_ttl_ms")
    if key is None:
        if until is not None or ttl is not None:
            raise RequestError(ErrorCode.INVALID_PAYLOAD,
                               "'unique_until' and 'unique_ttl_ms' need a 'unique_key'")
        return None, None, None
    if type(key) is not str or not key or len(key.encode()) > MAX_UNIQUE_KEY_BYTES:
        raise RequestError(ErrorCode.INVALID_PAYLOAD,
                           f"'unique_key' must be a string of 1 to {MAX_UNIQUE_KEY_BYTES} bytes")
    if ttl is not None:
        if until is not None:
            raise RequestError(ErrorCode.INVALID_PAYLOAD,
                               "give 'unique_until' or 'unique_ttl_ms', not both")
        if type(ttl) is not int or not 1 <= ttl <= MAX_UNIQUE_TTL_MS:
            raise RequestError(ErrorCode.INVALID_PAYLOAD,
                               f"'unique_ttl_ms' must be an integer 1..{MAX_UNIQUE_TTL_MS}")
        return key, UniqueScope.TTL, now_ms + ttl
    if until is None or until == "finish":
        return key, UniqueScope.FINISH, None
    if until == "start":
        return key, UniqueScope.START, None
    raise RequestError(ErrorCode.INVALID_PAYLOAD, "'unique_until' must be 'start' or 'finish'")


def parse_optional_group(p: dict[str, Any]) -> str | None:
    """ENQUEUE's `group`: any non-empty string without NUL, at most MAX_GROUP_BYTES."""
    group = p.get("group")
    if group is None:
        return None
    if (type(group) is not str or not group or "\x00" in group
            or len(group.encode()) > MAX_GROUP_BYTES):
        raise RequestError(ErrorCode.INVALID_PAYLOAD,
                           f"'group' must be a string of 1 to {MAX_GROUP_BYTES} bytes, "
                           "without NUL")
    return group


def unique_until(job: JobRecord) -> str | None:
    """How the job's unique key is held, as JOB shows it: `start`, `finish` or `ttl`."""
    return None if job.unique_scope is None else UniqueScope(job.unique_scope).label
