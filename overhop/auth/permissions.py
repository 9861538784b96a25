"""Permissions: a verb on a queue-name pattern, and the one rule that decides a request.

A user holds a set of `verb:pattern` permissions. The pattern is a glob on queue names
(`emails`, `billing-*`, `*`; `?` matches one character). The verbs:

| verb      | lets a user                                                           |
|-----------|-----------------------------------------------------------------------|
| `produce` | add jobs: ENQUEUE, ENQUEUEMANY                                        |
| `consume` | take and finish jobs: SUBSCRIBE, CREDIT, ACK, JOBBEAT, JOBLOG,        |
|           | COMPLETE, FAIL, RELEASE                                               |
| `read`    | look: QUEUE, JOB, LSJOB, LSQUEUE, QSTATS, STATUS, WATCH, LSSCHEDULE   |
| `manage`  | run queues: ADDQUEUE, SETQUEUE, PAUSE, RESUME, CLEARQUEUE, RETRY, RMJOB |
|           | and their schedules: ADDSCHEDULE, RMSCHEDULE, PAUSESCHEDULE,          |
|           | RESUMESCHEDULE                                                        |
| `admin`   | destroy queues: RMQUEUE, OBLITERATE; on `*`, the user messages too    |

Which message needs which verb, and on which queue, is `overhop/server/authorization.py`.
"""

import re
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase

from overhop.errors import ErrorCode, RequestError


class Verb(StrEnum):
    PRODUCE = "produce"
    CONSUME = "consume"
    READ = "read"
    MANAGE = "manage"
    ADMIN = "admin"


# Queue-name characters plus the two glob wildcards: no `[...]` classes, so a pattern
# means what it looks like.
PATTERN = re.compile(r"[A-Za-z0-9_*?-]{1,128}")
EVERY_QUEUE = "*"
# A handful per user in practice; the bound keeps one user record small.
MAX_PERMISSIONS = 256


@dataclass(frozen=True, slots=True, order=True)
class Permission:
    verb: Verb
    pattern: str

    def __str__(self) -> str:
        return f"{self.verb}:{self.pattern}"

    def covers(self, verb: Verb, queue_name: str | None) -> bool:
        """This permission grants `verb` on `queue_name`; on None (a request naming no
        queue), only a pattern of `*` does."""
        if verb is not self.verb:
            return False
        if queue_name is None:
            return self.pattern == EVERY_QUEUE
        return fnmatchcase(queue_name, self.pattern)


def parse_permission(text: object) -> Permission:
    """`verb:pattern` (`verb` alone means `verb:*`) or INVALID_PAYLOAD."""
    if type(text) is not str:
        raise RequestError(ErrorCode.INVALID_PAYLOAD, "a permission must be a string")
    verb_text, _, pattern = text.partition(":")
    try:
        verb = Verb(verb_text)
    except ValueError:
        raise RequestError(
            ErrorCode.INVALID_PAYLOAD,
            f"unknown verb {verb_text!r} in {text!r}: one of "
            f"{', '.join(v.value for v in Verb)}") from None
    pattern = pattern or EVERY_QUEUE
    if not PATTERN.fullmatch(pattern):
        raise RequestError(ErrorCode.INVALID_PAYLOAD,
                           f"bad queue pattern {pattern!r}: queue-name characters, * and ?")
    return Permission(verb, pattern)


def parse_permissions(value: object) -> frozenset[Permission]:
    if type(value) is not list or len(value) > MAX_PERMISSIONS:
        raise RequestError(ErrorCode.INVALID_PAYLOAD,
                           f"'permissions' must be a list of at most {MAX_PERMISSIONS} strings")
    return frozenset(parse_permission(item) for item in value)


def allows(permissions: frozenset[Permission], verb: Verb, queue_name: str | None) -> bool:
    return any(p.covers(verb, queue_name) for p in permissions)


def holds_verb(permissions: frozenset[Permission], verb: Verb) -> bool:
    """The user holds `verb` on some pattern (what a listing needs: it then shows only
    the queues the patterns match)."""
    return any(p.verb is verb for p in permissions)
