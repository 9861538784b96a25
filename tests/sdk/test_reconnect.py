"""The reconnection backoff plan."""

import random

import pytest
from overhop_client.reconnect import ReconnectBackoff


def test_delays_double_up_to_the_cap_with_equal_jitter() -> None:
    backoff = ReconnectBackoff(0.1, 1.0, random.Random(7))
    planned = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    for plan in planned:
        delay = backoff.next_delay()
        assert plan / 2 <= delay <= plan
    assert backoff.failures == len(planned)


def test_jitter_spreads_delays() -> None:
    delays = {ReconnectBackoff(1.0, 1.0, random.Random(seed)).next_delay() for seed in range(20)}
    assert len(delays) > 10


def test_reset_starts_again_from_the_initial_delay() -> None:
    backoff = ReconnectBackoff(0.1, 10.0, random.Random(1))
    for _ in range(10):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() <= 0.1


def test_a_long_outage_stays_at_the_cap() -> None:
    backoff = ReconnectBackoff(0.1, 5.0, random.Random(3))
    backoff.failures = 10_000
    assert 2.5 <= backoff.next_delay() <= 5.0


@pytest.mark.parametrize(("initial", "maximum"), [(0, 1), (2, 1), (-1, 1)])
def test_bad_bounds_are_refused(initial: float, maximum: float) -> None:
    with pytest.raises(ValueError):
        ReconnectBackoff(initial, maximum)
