"""Time as the protocol shows it: integer milliseconds inside, RFC 3339 on the wire.

Everything time-based in the broker takes `now_ms` as an argument; only the server asks
the clock, through `now_ms()`.
"""

import time
from datetime import UTC, datetime


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def to_rfc3339(ms: int) -> str:
    """UTC with millisecond precision and a `Z`, e.g. `2026-11-23T20:08:00.123Z`."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_rfc3339(text: str) -> int:
    """Milliseconds since the epoch; raises ValueError. A time without an offset is refused."""
    value = datetime.fromisoformat(text.replace("z", "Z"))
    if value.tzinfo is None:
        raise ValueError("an RFC 3339 time needs an offset or 'Z'")
    return int(value.timestamp() * 1000)
