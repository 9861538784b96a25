"""When to try connecting again after a failure: capped exponential backoff with jitter. Pure.

Delays double from `initial` up to `maximum`; each is "equal jitter" (half the delay kept,
the other half random), so workers that lost the same server spread their reconnections
out while none retries sooner than half the plan.
"""

import random


class ReconnectBackoff:
    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None
                 ) -> None:
        if not 0 < initial <= maximum:
            raise ValueError("reconnect delays need 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; each call counts one more failure."""
        # The exponent is capped so the power stays a small float however long the outage.
        planned = min(self.maximum, self.initial * 2.0 ** min(self.failures, 62))
        self.failures += 1
        return planned / 2 + self._rng.uniform(0, planned / 2)

    def reset(self) -> None:
        """A connection worked: the next failure starts from `initial` again."""
        self.failures = 0
