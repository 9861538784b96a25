"""The job record's optional `headers` (trace context): stored, and absent from records
written before the field existed."""

import msgpack

from overhop.model.jobs import JobRecord, JobStatus
from overhop.storage.records import decode_job, encode_job


def job(**fields: object) -> JobRecord:
    return JobRecord("q:0190f0e0-0000-7000-8000-000000000000", "q", JobStatus.WAITING, None,
                     1, 1, None, None, None, **fields)  # type: ignore[arg-type]


def test_headers_round_trip() -> None:
    headers = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    assert decode_job(encode_job(job(headers=headers))).headers == headers
    assert decode_job(encode_job(job())).headers is None


def test_a_record_from_before_headers_decodes_without_them() -> None:
    data = encode_job(job())
    fields = msgpack.unpackb(data[1:], raw=False)
    older = data[:1] + msgpack.packb(fields[:-1], use_bin_type=True)  # 19 fields, no headers
    assert decode_job(older) == job()
