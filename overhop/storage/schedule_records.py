"""Schedule records on disk: the codec, the read the server makes at boot, and the
primitives the schedule operations use inside a write transaction.

A schedule record is the format byte and a MessagePack array: name, queue name, cron
expression, time zone, job payload (bytes or nil), max_attempts, retry_interval_ms,
lease_ms, headers, missed policy, paused, last fire (ms or nil), counted from (ms),
created at (ms). New fields are appended with a default, as for the other records.
"""

from typing import Any

import msgpack

from overhop.model.schedules import MissedPolicy, ScheduleJob, ScheduleRecord
from overhop.storage.records import RECORD_FORMAT, RecordFormatError
from overhop.storage.store import Store
from overhop.storage.store_txn import StoreTxn

_FORMAT_BYTE = bytes((RECORD_FORMAT,))


def encode_schedule(record: ScheduleRecord) -> bytes:
    job = record.job
    body: bytes = msgpack.packb(
        [record.name, record.queue_name, record.cron, record.timezone, job.payload,
         job.max_attempts, job.retry_interval_ms, job.lease_ms, job.headers,
         record.missed.value, record.paused, record.last_fire_ms, record.counted_from_ms,
         record.created_at_ms, job.task, job.priority], use_bin_type=True)
    return _FORMAT_BYTE + body


def decode_schedule(data: bytes) -> ScheduleRecord:
    if not data or data[0] != RECORD_FORMAT:
        raise RecordFormatError(f"unknown schedule record format {data[:1]!r}")
    fields: list[Any] = msgpack.unpackb(data[1:], raw=False)
    (name, queue_name, cron, timezone, payload, max_attempts, retry_interval_ms, lease_ms,
     headers, missed, paused, last_fire_ms, counted_from_ms, created_at_ms) = fields[:14]
    # `task` and `priority` were appended later: older records have neither.
    task, priority = (*fields[14:16], None, None)[:2]
    return ScheduleRecord(
        name, queue_name, cron, timezone,
        ScheduleJob(payload, max_attempts, retry_interval_ms, lease_ms, headers, task, priority),
        MissedPolicy(missed), paused, last_fire_ms, counted_from_ms, created_at_ms)


def load_schedules(store: Store, limit: int) -> list[ScheduleRecord]:
    """The stored schedules, at most `limit` (`schedules.max_schedules` bounds how many
    there can be, so boot reads a bounded number)."""
    records: list[ScheduleRecord] = []
    with store.env.begin(db=store.schedules_db) as txn:
        for _, value in txn.cursor():
            if len(records) >= limit:
                break
            records.append(decode_schedule(bytes(value)))
    return records


# -- writes (in the writer process, inside an operation) ---------------------------------


def get_schedule(txn: StoreTxn, name: str) -> ScheduleRecord | None:
    data = txn.txn.get(name.encode(), db=txn._store.schedules_db)
    return None if data is None else decode_schedule(bytes(data))


def put_schedule(txn: StoreTxn, record: ScheduleRecord) -> bytes:
    data = encode_schedule(record)
    txn.txn.put(record.name.encode(), data, db=txn._store.schedules_db)
    return data


def delete_schedule(txn: StoreTxn, name: str) -> None:
    txn.txn.delete(name.encode(), db=txn._store.schedules_db)
