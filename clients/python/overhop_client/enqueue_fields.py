"""ENQUEUE's job fields from the SDK's keyword options (`EnqueueOptions`), checked before
they are sent: one place for `enqueue`, `enqueue_unique`, `run`, `enqueue_many` and
`add_schedule`."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, TypedDict

from overhop_client.codec import check_value
from overhop_client.times import format_time, to_ms

UniqueUntil = Literal["start", "finish"] | timedelta


class EnqueueOptions(TypedDict, total=False):
    """The keyword options of `AsyncClient.enqueue`, for wrappers that pass them on."""

    run_at: datetime | None
    delay: timedelta | None
    max_attempts: int | None
    retry_interval: timedelta | None
    lease: timedelta | None
    task: str | None
    priority: int | None
    unique_key: str | None
    unique_for: UniqueUntil | None
    group: str | None


class JobFields(TypedDict, total=False):
    """One job's fields in ENQUEUE (beside `q`) and in each entry of ENQUEUEMANY."""

    job_payload: object
    delay_ms: int
    scheduled_at: str
    max_attempts: int
    retry_interval_ms: int
    lease_ms: int
    headers: dict[str, str]
    task: str
    priority: int
    unique_key: str
    unique_until: str
    unique_ttl_ms: int
    group: str


@dataclass(frozen=True, slots=True)
class Enqueued:
    """What `enqueue_unique` added: the job's id, or, when `duplicate`, the id of the job
    already holding the unique key (nothing was added)."""

    jid: str
    duplicate: bool


def job_fields(payload: object, options: EnqueueOptions) -> JobFields:
    """One job's ENQUEUE fields (without `q`)."""
    p: JobFields = {}
    if payload is not None:
        check_value(payload)
        p["job_payload"] = payload
    delay, run_at = options.get("delay"), options.get("run_at")
    if delay is not None:
        if run_at is not None:
            raise ValueError("give run_at or delay, not both")
        if delay < timedelta(0):
            raise ValueError("delay must not be negative")
        p["delay_ms"] = to_ms(delay)
    if run_at is not None:
        p["scheduled_at"] = format_time(run_at)
    if (max_attempts := options.get("max_attempts")) is not None:
        p["max_attempts"] = max_attempts
    if (retry_interval := options.get("retry_interval")) is not None:
        p["retry_interval_ms"] = to_ms(retry_interval)
    if (lease := options.get("lease")) is not None:
        p["lease_ms"] = to_ms(lease)
    if (task := options.get("task")) is not None:
        p["task"] = task
    if (priority := options.get("priority")) is not None:
        p["priority"] = priority
    if (group := options.get("group")) is not None:
        p["group"] = group
    _unique_fields(p, options.get("unique_key"), options.get("unique_for"))
    return p


def _unique_fields(p: JobFields, key: str | None, until: UniqueUntil | None) -> None:
    if key is None:
        if until is not None:
            raise ValueError("unique_for needs a unique_key")
        return
    p["unique_key"] = key
    if isinstance(until, timedelta):
        if until <= timedelta(0):
            raise ValueError("unique_for must be a positive duration")
        p["unique_ttl_ms"] = to_ms(until)
    elif until is not None:
        if until not in ("start", "finish"):
            raise ValueError("unique_for must be 'start', 'finish' or a timedelta")
        p["unique_until"] = until
