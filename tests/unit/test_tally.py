"""The hot path's counters: fixed-bucket histograms and bounded worker names."""

import pytest

from overhop.http.sentences import blocked_sentence
from overhop.observability.tally import (
    MAX_WORKER_NAMES,
    OTHER_WORKER,
    UNNAMED_WORKER,
    Histogram,
    Tally,
)


def test_histogram_buckets_are_upper_bounds_inclusive() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        histogram.observe(value)
    assert histogram.cumulative() == [(0.1, 2), (1.0, 4), (float("inf"), 5)]
    assert histogram.count == 5 and histogram.sum == pytest.approx(8.65)


def test_worker_names_are_bounded() -> None:
    tally = Tally()
    for n in range(MAX_WORKER_NAMES + 5):
        tally.ended("q", "completed", f"worker-{n}", 10)
    tally.ended("q", "failed", None, 10)
    names = {name for name, _ in tally.worker_jobs}
    assert len(names) == MAX_WORKER_NAMES + 2
    assert tally.worker_jobs[(OTHER_WORKER, "completed")] == 5
    assert tally.worker_jobs[(UNNAMED_WORKER, "failed")] == 1
    assert tally.worker_label("worker-0") == "worker-0"


def test_queue_flows_and_forgetting_removed_queues() -> None:
    tally = Tally()
    tally.enqueued("a", 3)
    tally.started("a", 1500)
    tally.ended("a", "lease_expired", "w", -5)  # a clock step back counts as 0
    tally.enqueued("gone", 1)
    tally.keep_queues({"a"})
    assert set(tally.queues) == {"a"}
    queue = tally.queues["a"]
    assert queue.enqueued == 3 and queue.ended == {"lease_expired": 1}
    assert queue.wait.sum == 1.5 and queue.run.sum == 0


def test_blocked_by_sentences() -> None:
    assert blocked_sentence(None, "q") is None
    assert blocked_sentence({"reason": "concurrency_limit", "active": 5, "limit": 5},
                            "emails") == ("Concurrency 5/5 on 'emails': it starts when one "
                                          "of the jobs running ends.")
    assert "paused" in (blocked_sentence({"reason": "queue_paused"}, "q") or "")
    assert "no credit" in (blocked_sentence({"reason": "no_worker_credit",
                                             "subscriptions": 2}, "q") or "")
    for reason in ("queue_missing", "scheduled", "backing_off", "being_advanced",
                   "rate_limited", "in_line", "something_new"):
        assert blocked_sentence({"reason": reason, "until": "t"}, "q")
