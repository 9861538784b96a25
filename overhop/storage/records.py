"""Record codecs: queue and job records to and from bytes.

Every record starts with a format version byte. A record is a MessagePack array of its
fields in a fixed order; a new field is appended at the end with a default, so older
records still decode (see docs/storage.md for the procedure when that is not enough).
"""

from collections.abc import Callable
from dataclasses import fields
from typing import Any

import msgpack

from overhop.model.jobs import JobRecord, JobStatus
from overhop.model.queues import BackoffKind, QueueConfig, QueueRecord, QueueState

RECORD_FORMAT = 1
_FORMAT_BYTE = bytes((RECORD_FORMAT,))
# One Packer per process serves every encode: records are packed by the writer thread in
# the writer process, and by the event loop in the server (an operation's records cross to
# the writer as their stored bytes); neither process packs from two threads.
_pack: Callable[[Any], bytes] = msgpack.Packer(use_bin_type=True).pack


class RecordFormatError(Exception):
    """A stored record this version cannot read."""


def _check_format(data: bytes) -> bytes:
    if not data or data[0] != RECORD_FORMAT:
        raise RecordFormatError(f"unknown record format {data[:1]!r}")
    return data[1:]


def encode_job(job: JobRecord) -> bytes:
    return _FORMAT_BYTE + _pack(
        [
            job.job_id, job.queue_name, int(job.status), job.payload, job.created_at_ms,
            job.execution_start_at_ms, job.max_attempts, job.retry_interval_ms, job.lease_ms,
            job.reserved, job.attempts_so_far, job.delivery_id, job.worker_id,
            job.started_at_ms, job.finished_at_ms, job.result, job.history, job.logs,
            job.logs_dropped, job.headers, job.task, job.cancel_reason, job.priority,
            job.unique_key, job.unique_scope, job.unique_expires_at_ms, job.group,
        ]
    )


def decode_job(data: bytes) -> JobRecord:
    fields: list[Any] = msgpack.unpackb(_check_format(data), raw=False, strict_map_key=False)
    fields[2] = _STATUS_BY_NUMBER[fields[2]]
    return JobRecord(*fields)


_STATUS_BY_NUMBER = {int(status): status for status in JobStatus}


# Queue settings in stored order; a new setting is appended, and records written before it
# existed decode with the setting's default.
_QUEUE_SETTINGS = tuple(field.name for field in fields(QueueConfig))
_BACKOFF_POSITION = _QUEUE_SETTINGS.index("backoff")


def encode_queue(queue: QueueRecord) -> bytes:
    return _FORMAT_BYTE + _pack(
        [queue.queue_id, queue.name, queue.state.value, queue.created_at_ms,
         *_settings(queue.config)]
    )


def decode_queue(data: bytes) -> QueueRecord:
    queue_id, name, state, created_at_ms, *settings = msgpack.unpackb(
        _check_format(data), raw=False)
    return QueueRecord(
        queue_id=queue_id,
        name=name,
        state=QueueState(state),
        created_at_ms=created_at_ms,
        config=_config(settings),
    )


def encode_queue_config(config: QueueConfig) -> bytes:
    """A queue's settings alone, as a queue record holds them (for SETQUEUE and retention,
    whose operations carry a config to the writer process)."""
    return _FORMAT_BYTE + _pack(_settings(config))


def decode_queue_config(data: bytes) -> QueueConfig:
    return _config(msgpack.unpackb(_check_format(data), raw=False))


def _settings(config: QueueConfig) -> list[Any]:
    settings = [getattr(config, name) for name in _QUEUE_SETTINGS]
    settings[_BACKOFF_POSITION] = config.backoff.value
    return settings


def _config(settings: list[Any]) -> QueueConfig:
    values = dict(zip(_QUEUE_SETTINGS, settings, strict=False))
    values["backoff"] = BackoffKind(values.get("backoff", BackoffKind.FIXED.value))
    return QueueConfig(**values)
