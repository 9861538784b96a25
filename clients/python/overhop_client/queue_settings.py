"""Queue settings: the Pythonic names `add_queue`, `set_queue` and `QueueConfig` use, and
the wire keys they stand for. Pure.

| Python name | wire key | Python type |
|---|---|---|
| `concurrency_limit` | `concurrency_limit` | int |
| `allow_job_overrides` | `allow_job_overrides` | bool |
| `max_attempts` | `max_attempts` | int |
| `retry_interval` | `retry_interval_ms` | timedelta |
| `backoff` | `backoff` | `Backoff` (or "fixed" / "exponential") |
| `backoff_max` | `backoff_max_ms` | timedelta |
| `backoff_jitter` | `backoff_jitter` | bool |
| `lease` | `lease_ms` | timedelta |
| `rate_limit` | `rate_limit` | int: jobs started per `rate_window` |
| `rate_window` | `rate_window_ms` | timedelta (default one second) |
| `keep_completed` | `completed_max_count` | int: completed jobs kept, the oldest removed |
| `keep_completed_for` | `completed_max_age_ms` | timedelta: completed jobs removed when older |
| `keep_failed` | `failed_max_count` | int |
| `keep_failed_for` | `failed_max_age_ms` | timedelta |

In `set_queue`, `None` clears a setting (no limit, or the server's default); the settings
that always have a value (`allow_job_overrides`, `backoff`, `backoff_jitter`,
`rate_window`) cannot be cleared.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any, Literal, TypedDict

from overhop_client.times import parse_ms, to_ms


class Backoff(StrEnum):
    FIXED = "fixed"
    EXPONENTIAL = "exponential"


class QueueSettings(TypedDict, total=False):
    """The keyword arguments of `set_queue` (every one optional; see the module table)."""

    concurrency_limit: int | None
    allow_job_overrides: bool
    max_attempts: int | None
    retry_interval: timedelta | None
    backoff: Backoff | str
    backoff_max: timedelta | None
    backoff_jitter: bool
    lease: timedelta | None
    rate_limit: int | None
    rate_window: timedelta
    keep_completed: int | None
    keep_completed_for: timedelta | None
    keep_failed: int | None
    keep_failed_for: timedelta | None
    group_concurrency_limit: int | None


Kind = Literal["int", "bool", "duration", "backoff"]


@dataclass(frozen=True, slots=True)
class _Setting:
    wire: str
    kind: Kind
    clearable: bool


SETTINGS: dict[str, _Setting] = {
    "concurrency_limit": _Setting("concurrency_limit", "int", True),
    "allow_job_overrides": _Setting("allow_job_overrides", "bool", False),
    "max_attempts": _Setting("max_attempts", "int", True),
    "retry_interval": _Setting("retry_interval_ms", "duration", True),
    "backoff": _Setting("backoff", "backoff", False),
    "backoff_max": _Setting("backoff_max_ms", "duration", True),
    "backoff_jitter": _Setting("backoff_jitter", "bool", False),
    "lease": _Setting("lease_ms", "duration", True),
    "rate_limit": _Setting("rate_limit", "int", True),
    "rate_window": _Setting("rate_window_ms", "duration", False),
    "keep_completed": _Setting("completed_max_count", "int", True),
    "keep_completed_for": _Setting("completed_max_age_ms", "duration", True),
    "keep_failed": _Setting("failed_max_count", "int", True),
    "keep_failed_for": _Setting("failed_max_age_ms", "duration", True),
    "group_concurrency_limit": _Setting("group_concurrency_limit", "int", True),
}
"""Python name -> its wire key, its kind and whether None (nil) may clear it."""


def _to_wire(name: str, setting: _Setting, value: object) -> object:
    if value is None:
        if not setting.clearable:
            raise ValueError(f"{name} cannot be cleared (it always has a value)")
        return None
    if setting.kind == "int":
        if type(value) is not int:
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        return value
    if setting.kind == "bool":
        if type(value) is not bool:
            raise TypeError(f"{name} must be a bool, not {type(value).__name__}")
        return value
    if setting.kind == "duration":
        if not isinstance(value, timedelta):
            raise TypeError(f"{name} must be a timedelta, not {type(value).__name__}")
        return to_ms(value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a valid {Backoff.__qualname__}")
    return Backoff(value).value


def settings_to_wire(settings: Mapping[str, object]) -> dict[str, object]:
    """The wire `config` map for the given settings; None becomes nil (clear).

    TypeError for an unknown name or a value of the wrong type, ValueError for a bad
    backoff kind or clearing a setting that cannot be cleared.
    """
    wire: dict[str, object] = {}
    for name, value in settings.items():
        setting = SETTINGS.get(name)
        if setting is None:
            raise TypeError(f"unknown queue setting {name!r}; known: {', '.join(SETTINGS)}")
        wire[setting.wire] = _to_wire(name, setting, value)
    return wire


def _from_wire(setting: _Setting, value: Any) -> Any:
    if setting.kind == "duration":
        return parse_ms(value)
    if setting.kind == "backoff":
        return Backoff(value)
    return value


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """A queue's settings. None means: not set (no limit, keep everything, or the server's
    default from its `[jobs]` config)."""

    concurrency_limit: int | None = None
    allow_job_overrides: bool = True
    max_attempts: int | None = None
    retry_interval: timedelta | None = None
    backoff: Backoff = Backoff.FIXED
    backoff_max: timedelta | None = None
    backoff_jitter: bool = False
    lease: timedelta | None = None
    rate_limit: int | None = None
    """At most this many of the queue's jobs start per `rate_window`; None: no limit."""
    rate_window: timedelta = timedelta(seconds=1)
    keep_completed: int | None = None
    """Completed jobs kept (the oldest are removed past it); None: all."""
    keep_completed_for: timedelta | None = None
    """Completed jobs are removed once finished this long ago; None: never."""
    keep_failed: int | None = None
    keep_failed_for: timedelta | None = None
    group_concurrency_limit: int | None = None
    """At most this many active jobs per group (ENQUEUE's `group`); None: no limit."""

    @classmethod
    def from_wire(cls, p: Mapping[str, Any]) -> "QueueConfig":
        return cls(**{name: _from_wire(setting, p[setting.wire])
                      for name, setting in SETTINGS.items()
                      if p.get(setting.wire) is not None})

    def to_wire(self) -> dict[str, object]:
        """The settings as the server shows them: the ones not set are left out."""
        return settings_to_wire({name: getattr(self, name) for name in SETTINGS
                                 if getattr(self, name) is not None})
