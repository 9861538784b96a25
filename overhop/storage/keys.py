"""The whole LMDB key layout on one screen.

Layout version 3 (version 1 had no priority byte in `waiting` entries; `migrations.py`
rewrites them when a version-1 store opens; version 2 had no unique and group tables and
no grouped `waiting` entries, so it becomes 3 as it is). Named databases:

| db           | key                                              | value                  |
|--------------|--------------------------------------------------|------------------------|
| `meta`       | `layout_version`                                 | 1 byte                 |
| `queues`     | queue name                                       | queue record           |
| `jobs`       | job id (`<queue>:<uuid7>`)                       | job record             |
| `by_status`  | queue name, 0x00, status (1 byte), uuid7 (16 B); | empty                  |
|              | `waiting`: a priority rank byte before the uuid7 |                        |
|              | (with 0x80 set for a job with a group)           |                        |
| `by_time`    | queue name, 0x00, start ms (8 B BE), uuid7 (16 B)| empty                  |
| `by_finish`  | queue name, 0x00, status, finish ms (8 B), uuid7 | empty                  |
| `counters`   | queue name, 0x00, status (1 byte)                | count (8 B BE)         |
| `users`      | user name; 0x00 `secret` for the server's secret | user record; 32 bytes  |
| `schedules`  | schedule name                                    | schedule record        |
| `unique`     | queue name, 0x00, unique key                     | holder uuid7, ends ms  |
| `groups`     | queue name, 0x00, group (the queue's turns: none)| counts (group_index.py)|
| `group_ring` | queue name, 0x00, `r`, turn (8 B) / `p`, group   | group / empty          |
|`group_waiting`| queue name, 0x00, group, 0x00, rank, uuid7      | empty                  |

Queue names are ASCII letters, digits, `_` and `-`, so 0x00 ends a name unambiguously.
Numbers are big-endian so byte order is time order; uuid7 bytes sort by creation time, so
`by_status` is a FIFO per (queue, status) (for `waiting`, per priority: the rank byte,
0 for the highest priority, comes first), `by_time` finds due delayed jobs with one
range scan per queue, and `by_finish` orders completed and failed jobs by finish time for
retention. Bumping the layout: see docs/storage.md.
"""

import struct

from overhop.model.jobs import JobRecord, JobStatus, priority_rank

LAYOUT_VERSION = 3
SEPARATOR = b"\x00"
U64 = struct.Struct(">Q")

META_LAYOUT_VERSION = b"layout_version"
# In `users`: the server's random secret (fake salts for unknown names). User names never
# start with 0x00, so it cannot clash with one.
USERS_SECRET = b"\x00secret"


def queue_prefix(queue_name: str) -> bytes:
    return queue_name.encode() + SEPARATOR


def job_uuid_bytes(job_id: str) -> bytes:
    """The 16 bytes of the UUID that ends a job id (`<queue>:<8-4-4-4-12 hex>`)."""
    return bytes.fromhex(job_id[-36:].replace("-", ""))


def job_id_from(queue_name: str, uuid_bytes: bytes) -> str:
    return f"{queue_name}:{format_uuid(uuid_bytes.hex())}"


def format_uuid(hex32: str) -> str:
    """The canonical 8-4-4-4-12 form of 32 hex digits (faster than `uuid.UUID`)."""
    return f"{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:]}"


# Index prefixes per queue, made once: every job write needs several. Bounded, since read
# requests may name queues that do not exist.
_PREFIX_CACHE_LIMIT = 4096
_prefix_cache: dict[str, tuple[bytes, ...]] = {}


def queue_prefixes(queue_name: str) -> tuple[bytes, ...]:
    """Item 0: the queue prefix; item n: the prefix of status number n (1 to 7)."""
    prefixes = _prefix_cache.get(queue_name)
    if prefixes is None:
        if len(_prefix_cache) >= _PREFIX_CACHE_LIMIT:
            _prefix_cache.clear()
        base = queue_prefix(queue_name)
        prefixes = (base, *(base + bytes((status,)) for status in range(1, 8)))
        _prefix_cache[queue_name] = prefixes
    return prefixes


def status_prefix(queue_name: str, status: int) -> bytes:
    return queue_prefixes(queue_name)[status]


# Set in the rank byte of a grouped job's `waiting` entry: ungrouped jobs (the dispatch
# order's FIFO per priority) come first and grouped ones (dispatched from `group_waiting`,
# listed here) after them.
GROUPED_RANK = 0x80


def listed_rank(job: JobRecord | None) -> int:
    """The rank byte of a job's `waiting` entry (the default priority's, ungrouped, for
    None): where a page of `waiting` jobs goes on after it."""
    if job is None:
        return priority_rank(None)
    rank = priority_rank(job.priority)
    return rank if job.group is None else rank | GROUPED_RANK


def waiting_key(prefixes: tuple[bytes, ...], rank: int, uuid_bytes: bytes) -> bytes:
    """A `waiting` entry of `by_status`: highest priority first, then creation order."""
    return prefixes[JobStatus.WAITING] + bytes((rank,)) + uuid_bytes


def unique_key(queue_name: str, key: str) -> bytes:
    return queue_prefix(queue_name) + key.encode()


UNIQUE_HOLDER = struct.Struct(">16sQ")


def timed_key(prefix: bytes, at_ms: int, uuid_bytes: bytes) -> bytes:
    """A `by_time` key (prefix: the queue's) or a `by_finish` key (prefix: the queue's and
    the status): time order, then creation order."""
    return prefix + U64.pack(max(at_ms, 0)) + uuid_bytes


def time_key_due_bound(queue_name: str, now_ms: int) -> bytes:
    """Every time key of the queue below this bound is due at `now_ms`."""
    return queue_prefix(queue_name) + U64.pack(now_ms + 1)


def split_time_key(queue_name: str, key: bytes) -> tuple[int, bytes]:
    offset = len(queue_name) + 1
    return U64.unpack_from(key, offset)[0], key[offset + 8 :]


def split_finish_key(queue_name: str, key: bytes) -> tuple[int, bytes]:
    offset = len(queue_name) + 2
    return U64.unpack_from(key, offset)[0], key[offset + 8:]


def counter_key(queue_name: str, status: int) -> bytes:
    return status_prefix(queue_name, status)
