"""Job ids: `<queue>:<uuid7>`, time-ordered, monotonic within the process.

The `uuid6` package's `uuid7()` keeps order by adding a millisecond for every id made
within the same millisecond, so above 1,000 ids a second its timestamps run ahead of the
clock and, after a restart, new ids can sort before old ones. This generator follows RFC
9562 method 1 instead: the 48-bit millisecond timestamp, then a 12-bit counter in `rand_a`
that orders ids made in the same millisecond (4,096 per ms before the timestamp is
borrowed from the next one), then 62 random bits.
"""

import itertools
import os
import random
import uuid

from overhop.storage.keys import format_uuid

_COUNTER_LIMIT = 1 << 12
_random_bits = random.SystemRandom().getrandbits


class JobIdGenerator:
    __slots__ = ("_counter", "_last_ms", "_rng")

    def __init__(self) -> None:
        self._last_ms = 0
        self._counter = 0
        # Ids need to be unique and ordered, not secret: a seeded PRNG is fast enough.
        self._rng = random.Random(_random_bits(64))

    def new_uuid(self, now_ms: int) -> uuid.UUID:
        return uuid.UUID(int=self._next_value(now_ms))

    def _next_value(self, now_ms: int) -> int:
        if now_ms > self._last_ms:
            self._last_ms = now_ms
            self._counter = 0
        else:
            self._counter += 1
            if self._counter >= _COUNTER_LIMIT:
                self._last_ms += 1
                self._counter = 0
        value = (self._last_ms & 0xFFFF_FFFF_FFFF) << 80
        value |= 0x7 << 76  # version 7
        value |= self._counter << 64
        value |= 0b10 << 62  # RFC 9562 variant
        value |= self._rng.getrandbits(62)
        return value

    def new_job_id(self, queue_name: str, now_ms: int) -> str:
        return f"{queue_name}:{format_uuid(f'{self._next_value(now_ms):032x}')}"


class DeliveryIdGenerator:
    """Delivery ids: a random per-process prefix and a counter, e.g. `3f9a1c2e7b40d5a1-2a`.

    Unique across restarts (the prefix is new each time), cheap to make, and opaque to
    clients, which only echo them.
    """

    __slots__ = ("_counter", "_prefix")

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(1)

    def new_id(self) -> str:
        return f"{self._prefix}-{next(self._counter):x}"
