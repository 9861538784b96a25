"""Task names: which of a queue's handlers runs a job (ENQUEUE's optional `task`).

The server stores a job's task name and hands it to the worker with the job; it never
chooses a worker by it. The naming rule keeps names printable and short, since they are
stored with every job and shown in listings: dotted module paths (`billing.send_invoice`)
and `module:function` forms fit.
"""

import re
from typing import Any

from overhop.errors import ErrorCode, RequestError

# 128 characters, like a queue name: room for a dotted module path, small beside a record.
MAX_TASK_NAME_LENGTH = 128
TASK_NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}")


def parse_task_name(value: Any, *, field: str = "task") -> str:
    """A task name from a request, or INVALID_PAYLOAD (not a non-empty string) or
    TASK_NAME_INVALID (a string that breaks the rule)."""
    if type(value) is not str or not value:
        raise RequestError(ErrorCode.INVALID_PAYLOAD, f"'{field}' must be a non-empty string")
    if not TASK_NAME_PATTERN.fullmatch(value):
        raise RequestError(
            ErrorCode.TASK_NAME_INVALID,
            f"invalid task name {value[:MAX_TASK_NAME_LENGTH + 1]!r}: ASCII letters, digits, "
            f"'_', '.', ':' and '-', starting with a letter, digit or '_', at most "
            f"{MAX_TASK_NAME_LENGTH} characters",
        )
    return value


def parse_optional_task_name(payload: dict[str, Any], field: str = "task") -> str | None:
    value = payload.get(field)
    return None if value is None else parse_task_name(value, field=field)
