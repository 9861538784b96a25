"""Queues: names, configuration, state and the record kept for each."""

import re
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from overhop.wire.errors import ErrorCode, RequestError

# The draft's rule: first character an ASCII letter or digit, then letters, digits, _ or -.
# System queues start with `_`. 128 characters keep index keys short.
QUEUE_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
SYSTEM_QUEUE_PATTERN = re.compile(r"_[A-Za-z0-9_-]{1,127}")
SYSTEM_QUEUE_NAME = "_system"


class QueueState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"


class BackoffKind(StrEnum):
    FIXED = "fixed"
    EXPONENTIAL = "exponential"


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """A queue's settings. None means: use the server's default from `[jobs]`."""

    concurrency_limit: int | None = None
    allow_job_overrides: bool = True
    max_attempts: int | None = None
    retry_interval_ms: int | None = None
    backoff: BackoffKind = BackoffKind.FIXED
    backoff_max_ms: int | None = None
    backoff_jitter: bool = False
    lease_ms: int | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "allow_job_overrides": self.allow_job_overrides,
            "backoff": self.backoff.value,
            "backoff_jitter": self.backoff_jitter,
        }
        for name in ("concurrency_limit", "max_attempts", "retry_interval_ms",
                     "backoff_max_ms", "lease_ms"):
            value = getattr(self, name)
            if value is not None:
                wire[name] = value
        return wire


@dataclass(frozen=True, slots=True)
class QueueRecord:
    queue_id: str
    name: str
    state: QueueState
    created_at_ms: int
    config: QueueConfig

    @property
    def is_system(self) -> bool:
        return self.name.startswith("_")

    def with_state(self, state: QueueState) -> "QueueRecord":
        return replace(self, state=state)


# Bounds for the positive integer settings, with why: a day of lease or backoff is the most
# any sane job needs; 1,000 attempts is already a retry storm.
_INT_SETTINGS: dict[str, tuple[int, int]] = {
    "concurrency_limit": (1, 1_000_000),
    "max_attempts": (1, 1000),
    "retry_interval_ms": (1, 86_400_000),
    "backoff_max_ms": (1, 86_400_000),
    "lease_ms": (100, 86_400_000),
}
_BOOL_SETTINGS = ("allow_job_overrides", "backoff_jitter")


def parse_queue_name(value: Any, *, field: str = "q") -> str:
    if type(value) is not str or not value:
        raise RequestError(ErrorCode.INVALID_PAYLOAD, f"'{field}' must be a non-empty string")
    if not (QUEUE_NAME_PATTERN.fullmatch(value) or SYSTEM_QUEUE_PATTERN.fullmatch(value)):
        raise RequestError(
            ErrorCode.QUEUE_NAME_INVALID,
            f"invalid queue name {value!r}: letters, digits, '_' and '-', "
            "starting with a letter or digit, at most 128 characters",
        )
    return value


def parse_queue_config(value: Any, base: QueueConfig | None = None) -> QueueConfig:
    """Validate an ADDQUEUE `config` map (every key optional) onto `base`."""
    config = base or QueueConfig()
    if value is None:
        return config
    if type(value) is not dict:
        raise RequestError(ErrorCode.INVALID_PAYLOAD, "'config' must be a map")
    changes: dict[str, Any] = {}
    for key, item in value.items():
        if key in _INT_SETTINGS:
            low, high = _INT_SETTINGS[key]
            if item is None:  # nil clears the setting: no limit, or the server default
                changes[key] = None
                continue
            if type(item) is not int or not low <= item <= high:
                raise RequestError(
                    ErrorCode.INVALID_PAYLOAD, f"config.{key} must be an integer {low}..{high}"
                )
            changes[key] = item
        elif key in _BOOL_SETTINGS:
            if type(item) is not bool:
                raise RequestError(ErrorCode.INVALID_PAYLOAD, f"config.{key} must be a bool")
            changes[key] = item
        elif key == "backoff":
            try:
                changes[key] = BackoffKind(item)
            except ValueError:
                raise RequestError(
                    ErrorCode.INVALID_PAYLOAD, "config.backoff must be 'fixed' or 'exponential'"
                ) from None
        else:
            raise RequestError(ErrorCode.INVALID_PAYLOAD, f"unknown queue setting {key!r}")
    return replace(config, **changes)
