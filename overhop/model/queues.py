"""Queues: names, configuration, state and the record kept for each."""

import re
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from overhop.errors import ErrorCode, RequestError

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
    rate_limit: int | None = None
    rate_window_ms: int = 1000
    completed_max_count: int | None = None
    completed_max_age_ms: int | None = None
    failed_max_count: int | None = None
    failed_max_age_ms: int | None = None
    # At most this many active jobs per group (ENQUEUE's `group`) at any instant.
    group_concurrency_limit: int | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "allow_job_overrides": self.allow_job_overrides,
            "backoff": self.backoff.value,
            "backoff_jitter": self.backoff_jitter,
            "rate_window_ms": self.rate_window_ms,
        }
        for name in _OPTIONAL_INT_SETTINGS:
            value = getattr(self, name)
            if value is not None:
                wire[name] = value
        return wire

    @property
    def has_retention(self) -> bool:
        return any(getattr(self, name) is not None for name in RETENTION_SETTINGS)


RETENTION_SETTINGS = ("completed_max_count", "completed_max_age_ms", "failed_max_count",
                      "failed_max_age_ms")
_OPTIONAL_INT_SETTINGS = ("concurrency_limit", "max_attempts", "retry_interval_ms",
                          "backoff_max_ms", "lease_ms", "rate_limit", *RETENTION_SETTINGS,
                          "group_concurrency_limit")


@dataclass(frozen=True, slots=True)
class JobPolicy:
    """The settings in force for one job: its own overrides, else its queue's, else the
    server's `[jobs]` defaults. Resolved when needed, so live queue changes apply."""

    max_attempts: int
    retry_interval_ms: int
    lease_ms: int
    backoff: BackoffKind
    backoff_max_ms: int | None
    backoff_jitter: bool

    def to_wire(self) -> dict[str, Any]:
        return {"kind": self.backoff.value, "max_ms": self.backoff_max_ms,
                "jitter": self.backoff_jitter}


def resolve_policy(max_attempts: int | None, retry_interval_ms: int | None,
                   lease_ms: int | None, config: QueueConfig, default_max_attempts: int,
                   default_retry_interval_ms: int, default_lease_ms: int) -> JobPolicy:
    return JobPolicy(
        max_attempts=max_attempts or config.max_attempts or default_max_attempts,
        retry_interval_ms=retry_interval_ms or config.retry_interval_ms
        or default_retry_interval_ms,
        lease_ms=lease_ms or config.lease_ms or default_lease_ms,
        backoff=config.backoff,
        backoff_max_ms=config.backoff_max_ms,
        backoff_jitter=config.backoff_jitter,
    )


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
    # A rate of a million starts per window is beyond what one broker can dispatch.
    "rate_limit": (1, 1_000_000),
    # Windows from 10 ms (finer is below the timer's precision) to a day.
    "rate_window_ms": (10, 86_400_000),
    # Retention: a billion jobs or ten years is "keep", said with a number.
    "completed_max_count": (0, 1_000_000_000),
    "completed_max_age_ms": (0, 315_360_000_000),
    "failed_max_count": (0, 1_000_000_000),
    "failed_max_age_ms": (0, 315_360_000_000),
    "group_concurrency_limit": (1, 1_000_000),
}
# Settings that cannot be cleared with nil (they always have a value).
_REQUIRED_INT_SETTINGS = frozenset({"rate_window_ms"})
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
            if item is None and key not in _REQUIRED_INT_SETTINGS:
                changes[key] = None  # nil clears it: no limit, or the server default
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
