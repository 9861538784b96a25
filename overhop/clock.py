"""Time as the protocol shows it: integer milliseconds inside, RFC 3339 on the wire.

Everything time-based in the broker takes `now_ms` as an argument; only the server asks
the clock, through `now_ms()`.
"""

import re
import time
from datetime import UTC, datetime

# RFC 3339 `date-time`: full date, `T` (or `t`/space is not allowed here: we keep to the
# strict form), time with seconds, optional fraction, and a `Z` or a `±hh:mm` offset.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})"
)
# Times a job may be scheduled at: from the epoch to the end of year 9999, the range
# every RFC 3339 timestamp can express once converted to UTC.
MIN_TIME_MS = 0
MAX_TIME_MS = 253_402_300_799_999


def now_ms() -> int:
    return time.time_ns() // 1_000_000


_second_cache: list[object] = [-1, ""]


def to_rfc3339(ms: int) -> str:
    """UTC with millisecond precision and a `Z`, e.g. `2026-11-23T20:08:00.123Z`.

    The seconds part is formatted once per second (replies format "now" constantly).
    """
    seconds, millis = divmod(ms, 1000)
    if _second_cache[0] != seconds:
        _second_cache[0] = seconds
        _second_cache[1] = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{_second_cache[1]}.{millis:03d}Z"


def parse_rfc3339(text: str) -> int:
    """Milliseconds since the epoch; ValueError unless `text` is a strict RFC 3339 time
    between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z."""
    if not _RFC3339.fullmatch(text):
        raise ValueError(f"not an RFC 3339 date-time: {text!r}")
    fraction = re.search(r"\.(\d+)", text)
    if fraction and len(fraction.group(1)) > 6:  # Python keeps microseconds at most
        text = text.replace(fraction.group(0), "." + fraction.group(1)[:6])
    value = datetime.fromisoformat(text.upper())
    ms = int(value.timestamp() * 1000)
    if not MIN_TIME_MS <= ms <= MAX_TIME_MS:
        raise ValueError(f"{text!r} is outside 1970-01-01 .. 9999-12-31 (UTC)")
    return ms
