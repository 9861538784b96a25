"""The job record codec (msgspec, storage/records.py) against the format it must keep: one
format byte, then the fields as a MessagePack array in declared order, byte for byte what
`msgpack` made of the same list, so stores written before the switch read the same."""

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overhop.model.jobs import JobRecord, JobStatus
from overhop.storage.records import RecordFormatError, decode_job, encode_job

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
MS = st.integers(min_value=0, max_value=2**53)
SMALL_TEXT = st.text(max_size=40)
# What a history entry or a FAIL's error map holds: plain MessagePack values (the wire
# refuses extension types), string keys.
PLAIN = st.recursive(
    st.none() | st.booleans() | INT64 | st.floats(allow_nan=False) | SMALL_TEXT
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(SMALL_TEXT, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def job_records(draw: st.DrawFn) -> JobRecord:
    optional_int = st.none() | st.integers(min_value=1, max_value=86_400_000)
    return JobRecord(
        job_id=draw(SMALL_TEXT), queue_name=draw(SMALL_TEXT),
        status=draw(st.sampled_from(JobStatus)),
        payload=draw(st.none() | st.binary(max_size=300)),
        created_at_ms=draw(MS), execution_start_at_ms=draw(MS),
        max_attempts=draw(optional_int), retry_interval_ms=draw(optional_int),
        lease_ms=draw(optional_int), reserved=None,
        attempts_so_far=draw(st.integers(min_value=0, max_value=1000)),
        delivery_id=draw(st.none() | SMALL_TEXT), worker_id=draw(st.none() | SMALL_TEXT),
        started_at_ms=draw(st.none() | MS), finished_at_ms=draw(st.none() | MS),
        result=draw(st.none() | st.binary(max_size=300)),
        history=draw(st.lists(st.dictionaries(SMALL_TEXT, PLAIN, max_size=4), max_size=3)),
        logs=draw(st.lists(st.tuples(MS, SMALL_TEXT).map(list), max_size=3)),
        logs_dropped=draw(st.integers(min_value=0, max_value=10**6)),
        headers=draw(st.none() | st.dictionaries(SMALL_TEXT, SMALL_TEXT, max_size=3)),
        task=draw(st.none() | SMALL_TEXT), cancel_reason=draw(st.none() | SMALL_TEXT),
        priority=draw(st.none() | st.integers(min_value=1, max_value=9)),
        unique_key=draw(st.none() | SMALL_TEXT),
        unique_scope=draw(st.none() | st.integers(min_value=1, max_value=3)),
        unique_expires_at_ms=draw(st.none() | MS), group=draw(st.none() | SMALL_TEXT),
    )


def _fields(job: JobRecord) -> list[Any]:
    values = [getattr(job, name) for name in JobRecord.__struct_fields__]
    values[2] = int(values[2])
    return values


@settings(max_examples=300, deadline=None)
@given(job_records())
def test_a_record_is_the_same_bytes_as_msgpack_made_and_decodes_to_the_same_job(
        job: JobRecord) -> None:
    data = encode_job(job)
    assert data == b"\x01" + msgpack.packb(_fields(job), use_bin_type=True)
    assert decode_job(data) == job
    assert decode_job(data).status is job.status


def test_a_record_written_before_the_later_fields_decodes_with_their_defaults() -> None:
    job = JobRecord("q:1", "q", JobStatus.WAITING, b"\x01", 1, 2, None, None, None)
    first_nineteen = _fields(job)[:19]  # up to `logs_dropped`: before `headers` existed
    decoded = decode_job(b"\x01" + msgpack.packb(first_nineteen, use_bin_type=True))
    assert decoded == job
    assert decoded.history == [] and decoded.history is not job.history


@pytest.mark.parametrize("data", [b"", b"\x02\x90", b"\x01\x93\x01\x02\x03", b"\x01\x99\xa3q:",
                                  b"\x01" + msgpack.packb(["q:1", "q", 99, None, 1, 1,
                                                           None, None, None])])
def test_a_record_that_is_not_a_job_is_refused_as_such(data: bytes) -> None:
    with pytest.raises(RecordFormatError):
        decode_job(data)
