"""Record codecs: queue and job records to and from bytes.

Every record starts with a format version byte. A record is a MessagePack array of its
fields in a fixed order; a new field is appended at the end with a default, so older
records still decode (see docs/storage.md for the procedure when that is not enough).
"""

from collections.abc import Callable
from dataclasses import fields
from typing import Any

import msgpack
import msgspec

from overhop.model.jobs import JobRecord
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


# A job record is its struct's fields as a MessagePack array (model/jobs.py), encoded and
# decoded by msgspec in C: about half the time of msgpack plus building the record in
# Python, and the same bytes. The decoder checks every field's type; a trailing field that
# a record lacks (written before the field existed) takes its default.
_encode_job = msgspec.msgpack.Encoder().encode
_decode_job = msgspec.msgpack.Decoder(JobRecord).decode


def encode_job(job: JobRecord) -> bytes:
    return _FORMAT_BYTE + _encode_job(job)


def decode_job(data: bytes) -> JobRecord:
    if not data or data[0] != RECORD_FORMAT:
        raise RecordFormatError(f"unknown record format {data[:1]!r}")
    try:
        return _decode_job(memoryview(data)[1:])
    except msgspec.MsgspecError as exc:  # not MessagePack, or not a job's fields
        raise RecordFormatError(f"a job record does not decode: {exc}") from None


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
