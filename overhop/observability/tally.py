"""Counters and histograms the hot path updates: a dict increment or a bucket increment.

Nothing here formats or exports; `overhop.http.metrics` reads these at scrape time and
turns them into Prometheus families. Label sets are bounded: queues are bounded by the
queues that exist (a removed queue's entries are dropped with `keep_queues`), outcomes by
the `AttemptOutcome` enum, worker names by `MAX_WORKER_NAMES`.
"""

from bisect import bisect_left
from dataclasses import dataclass, field

# Seconds a job waits between becoming ready and its QUEST, or runs between its QUEST and
# its outcome: from 5 ms (a direct hand-over) up to an hour (a long batch job).
JOB_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                       60.0, 300.0, 900.0, 3600.0)
# One commit (operations, then the data sync) or one explicit sync: 100 µs on a fast NVMe
# disk up to a second on a disk in trouble.
STORAGE_SECONDS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                           0.1, 0.25, 0.5, 1.0)
# Distinct worker names kept as label values; later names are counted under OTHER_WORKER,
# so a fleet that names workers by pod never grows the metrics page without bound.
MAX_WORKER_NAMES = 100
OTHER_WORKER = "_other"
UNNAMED_WORKER = "_unnamed"


class Histogram:
    """A fixed-bucket histogram: `counts[i]` holds observations ≤ `bounds[i]` and above
    the bound before it; the last count is above every bound (Prometheus' `+Inf`)."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), ending with (inf, count)."""
        buckets = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets


@dataclass(slots=True)
class QueueTally:
    """One queue's flows since the server started."""

    enqueued: int = 0
    # Attempt outcome label -> attempts that ended so.
    ended: dict[str, int] = field(default_factory=dict)
    wait: Histogram = field(default_factory=lambda: Histogram(JOB_SECONDS_BUCKETS))
    run: Histogram = field(default_factory=lambda: Histogram(JOB_SECONDS_BUCKETS))


@dataclass(slots=True)
class Tally:
    """The broker's flows: jobs enqueued, attempts started and ended, per queue and per
    worker name."""

    queues: dict[str, QueueTally] = field(default_factory=dict)
    # (worker name, outcome label) -> attempts ended.
    worker_jobs: dict[tuple[str, str], int] = field(default_factory=dict)
    # Schedule name -> jobs its occurrences enqueued (bounded by `schedules.max_schedules`;
    # a removed schedule's entry is dropped).
    schedule_fires: dict[str, int] = field(default_factory=dict)
    _names: set[str] = field(default_factory=set)

    def queue(self, name: str) -> QueueTally:
        tally = self.queues.get(name)
        if tally is None:
            tally = self.queues[name] = QueueTally()
        return tally

    def enqueued(self, queue_name: str, jobs: int) -> None:
        self.queue(queue_name).enqueued += jobs

    def started(self, queue_name: str, waited_ms: int) -> None:
        """A QUEST went out for a job ready `waited_ms` ago."""
        self.queue(queue_name).wait.observe(max(0, waited_ms) / 1000)

    def ended(self, queue_name: str, outcome: str, worker_name: object, ran_ms: int) -> None:
        """An attempt ended `ran_ms` after its QUEST, with `outcome`, on that worker."""
        tally = self.queue(queue_name)
        tally.ended[outcome] = tally.ended.get(outcome, 0) + 1
        tally.run.observe(max(0, ran_ms) / 1000)
        key = (self.worker_label(worker_name), outcome)
        self.worker_jobs[key] = self.worker_jobs.get(key, 0) + 1

    def worker_label(self, worker_name: object) -> str:
        """The label value for a worker's REGISTER name (bounded, see MAX_WORKER_NAMES)."""
        if not isinstance(worker_name, str) or not worker_name:
            return UNNAMED_WORKER
        if worker_name in self._names:
            return worker_name
        if len(self._names) >= MAX_WORKER_NAMES:
            return OTHER_WORKER
        self._names.add(worker_name)
        return worker_name

    def keep_queues(self, names: "set[str] | frozenset[str]") -> None:
        """Forget the queues not in `names` (removed or obliterated)."""
        for name in [name for name in self.queues if name not in names]:
            del self.queues[name]


@dataclass(slots=True)
class StorageTimings:
    """Commit and sync durations the writer process reports with each message."""

    commit: Histogram = field(default_factory=lambda: Histogram(STORAGE_SECONDS_BUCKETS))
    sync: Histogram = field(default_factory=lambda: Histogram(STORAGE_SECONDS_BUCKETS))

    def add(self, commits: list[float], syncs: list[float]) -> None:
        for seconds in commits:
            self.commit.observe(seconds)
        for seconds in syncs:
            self.sync.observe(seconds)
