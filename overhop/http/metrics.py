"""`/metrics`: the Prometheus text, computed at scrape time from what the broker counts.

Nothing is registered on the hot path: the broker and the writer keep plain counters and
fixed-bucket histograms (`overhop.observability.tally`). A scrape takes a snapshot of them,
of the broker's in-memory view and of the store's per-queue counters (two short read
transactions per queue) on the event loop: plain numbers, about a millisecond per hundred
queues. Turning the snapshot into Prometheus families and text, which costs several times
that, runs in a thread (`render_text`), so a scrape does not hold the loop while it
formats. docs/metrics.md lists every family.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from overhop import __version__
from overhop.http.sources import Sources
from overhop.model.jobs import JobStatus
from overhop.model.queues import QueueState
from overhop.observability.tally import Histogram

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# (upper bound, observations at or below it)..., sum: a histogram copied off the hot path.
HistogramCopy = tuple[list[tuple[float, int]], float]


@dataclass(slots=True)
class QueueNumbers:
    name: str
    counts: dict[str, int]
    oldest_age_s: float
    in_use: int
    limit: int | None
    rate_limit: int | None
    rate_window_s: float
    paused: bool
    subscriptions: int
    credits: int


@dataclass(slots=True)
class Snapshot:
    """Every number of one scrape, copied on the loop; formatted later, in a thread."""

    queues: list[QueueNumbers] = field(default_factory=list)
    # (queue, enqueued, {outcome: count}, wait, run)
    flows: list[tuple[str, int, dict[str, int], HistogramCopy, HistogramCopy]] = field(
        default_factory=list)
    worker_jobs: dict[tuple[str, str], int] = field(default_factory=dict)
    schedule_fires: dict[str, int] = field(default_factory=dict)
    gauges: list[tuple[str, str, float]] = field(default_factory=list)
    counters: list[tuple[str, str, int]] = field(default_factory=list)
    storage: list[tuple[str, int]] = field(default_factory=list)
    space_low: bool = False
    commit: HistogramCopy = ([], 0.0)
    sync: HistogramCopy = ([], 0.0)


def _copy(histogram: Histogram) -> HistogramCopy:
    return histogram.cumulative(), histogram.sum


async def take_snapshot(sources: Sources) -> Snapshot:
    """The scrape's numbers (on the loop: the broker's state is the loop's)."""
    broker, store, writer = sources.broker, sources.reads, sources.writer
    now = sources.clock()
    snap = Snapshot()
    for name, runtime in list(broker.queues.items()):
        record = runtime.record
        if record.is_system:
            continue
        counts = await store.counts(name)
        created = await store.oldest_created_ms(name, JobStatus.WAITING)
        config = record.config
        snap.queues.append(QueueNumbers(
            name, {status.label: counts[status] for status in JobStatus},
            0.0 if created is None else max(0, now - created) / 1000, runtime.active,
            config.concurrency_limit, config.rate_limit, config.rate_window_ms / 1000,
            record.state == QueueState.PAUSED, len(runtime.subscriptions),
            sum(sub.credits for sub in runtime.subscriptions if sub.active)))
    tally = broker.tally
    tally.keep_queues(set(broker.queues))
    for name, queue in sorted(tally.queues.items()):
        snap.flows.append((name, queue.enqueued, dict(queue.ended), _copy(queue.wait),
                           _copy(queue.run)))
    snap.worker_jobs = dict(tally.worker_jobs)
    snap.schedule_fires = dict(tally.schedule_fires)
    snap.gauges = [
        ("overhop_connections", "Open client connections.", len(sources.connections)),
        ("overhop_workers", "Registered workers (connections past REGISTER).",
         len(broker.workers)),
        ("overhop_deliveries_in_flight", "Jobs out to workers now.", len(broker.deliveries)),
        ("overhop_uptime_seconds", "Seconds since the server started.",
         sources.uptime_seconds()),
    ]
    snap.counters = [
        ("overhop_deliveries", "QUESTs sent.", broker.dispatched_total),
        ("overhop_commits", "Write transactions committed.", writer.commits),
        ("overhop_write_operations", "Write operations committed (many per commit).",
         writer.operations),
    ]
    usage = await store.usage()
    snap.storage = [("map_size", usage.map_size_bytes), ("used", usage.used_bytes),
                    ("file", usage.file_bytes),
                    ("max", sources.config.storage.max_map_size_bytes)]
    snap.space_low = writer.space_low
    snap.commit, snap.sync = _copy(writer.timings.commit), _copy(writer.timings.sync)
    return snap


def _le(bound: float) -> str:
    """A bucket bound as Prometheus writes it (`0.005`, `1.0`, `+Inf`)."""
    return "+Inf" if bound == float("inf") else repr(float(bound))


def _add(family: HistogramMetricFamily, labels: list[str], copy: HistogramCopy) -> None:
    buckets, total = copy
    family.add_metric(labels, [(_le(bound), count) for bound, count in buckets], total)


class SnapshotCollector(Collector):
    """The families of one snapshot (pure: safe in any thread)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snap = snapshot

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("overhop_build_info", "Always 1; the version as a label.",
                                 labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield from self._queues()
        yield from self._flows()
        for name, doc, value in self._snap.gauges:
            yield GaugeMetricFamily(name, doc, value=value)
        for name, doc, count in self._snap.counters:
            yield CounterMetricFamily(name, doc, value=count)
        yield from self._storage()

    def _queues(self) -> Iterator[Metric]:
        def gauge(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=["queue"])

        jobs = GaugeMetricFamily("overhop_jobs", "Jobs by queue and status (exact: read from "
                                 "the counters kept with the records).", labels=["queue", "status"])
        oldest = gauge("overhop_queue_oldest_waiting_age_seconds",
                       "Age of the queue's oldest waiting job (since its creation); 0 when "
                       "none waits.")
        in_use = gauge("overhop_queue_concurrency_in_use", "Jobs of the queue out to workers now.")
        limit = gauge("overhop_queue_concurrency_limit",
                      "The queue's concurrency limit (queues with one).")
        rate = gauge("overhop_queue_rate_limit",
                     "Jobs the queue may start per rate window (queues with one).")
        window = gauge("overhop_queue_rate_window_seconds",
                       "Length of the queue's rate window (queues with a rate limit).")
        paused = gauge("overhop_queue_paused", "1 when the queue is paused.")
        subscriptions = gauge("overhop_subscriptions", "Worker subscriptions to the queue.")
        credits = gauge("overhop_queue_credits", "Credits the queue's subscriptions have left.")
        for q in self._snap.queues:
            for status, count in q.counts.items():
                jobs.add_metric([q.name, status], count)
            oldest.add_metric([q.name], q.oldest_age_s)
            in_use.add_metric([q.name], q.in_use)
            if q.limit is not None:
                limit.add_metric([q.name], q.limit)
            if q.rate_limit is not None:
                rate.add_metric([q.name], q.rate_limit)
                window.add_metric([q.name], q.rate_window_s)
            paused.add_metric([q.name], 1 if q.paused else 0)
            subscriptions.add_metric([q.name], q.subscriptions)
            credits.add_metric([q.name], q.credits)
        yield from (jobs, oldest, in_use, limit, rate, window, paused, subscriptions, credits)

    def _flows(self) -> Iterator[Metric]:
        enqueued = CounterMetricFamily("overhop_jobs_enqueued",
                                       "Jobs accepted by ENQUEUE and ENQUEUEMANY, and jobs "
                                       "schedules fired.", labels=["queue"])
        ended = CounterMetricFamily("overhop_attempts_ended",
                                    "Deliveries ended, by outcome (completed, failed, "
                                    "lease_expired, disconnected, stale_worker, withdrawn, "
                                    "released, server_shutdown, server_restart).",
                                    labels=["queue", "outcome"])
        wait = HistogramMetricFamily("overhop_job_wait_seconds",
                                     "From a job's start time (ready) to its QUEST.",
                                     labels=["queue"])
        run = HistogramMetricFamily("overhop_job_run_seconds",
                                    "From a job's QUEST to its outcome.", labels=["queue"])
        for name, count, outcomes, waited, ran in self._snap.flows:
            enqueued.add_metric([name], count)
            for outcome, n in sorted(outcomes.items()):
                ended.add_metric([name, outcome], n)
            _add(wait, [name], waited)
            _add(run, [name], ran)
        workers = CounterMetricFamily(
            "overhop_worker_jobs",
            "Deliveries ended, by the worker's REGISTER name and outcome (at most 100 names; "
            "later ones count as _other, nameless workers as _unnamed).",
            labels=["worker", "outcome"])
        for (worker, outcome), n in sorted(self._snap.worker_jobs.items()):
            workers.add_metric([worker, outcome], n)
        fires = CounterMetricFamily("overhop_schedule_fires",
                                    "Jobs a schedule enqueued (committed fires).",
                                    labels=["schedule"])
        for schedule, n in sorted(self._snap.schedule_fires.items()):
            fires.add_metric([schedule], n)
        yield from (enqueued, ended, wait, run, workers, fires)

    def _storage(self) -> Iterator[Metric]:
        storage = GaugeMetricFamily(
            "overhop_storage_bytes",
            "Storage: map_size (mapped now), used (up to the high-water page), file (on disk),"
            " max (storage.max_map_size_bytes).", labels=["kind"])
        for kind, value in self._snap.storage:
            storage.add_metric([kind], value)
        yield storage
        yield GaugeMetricFamily("overhop_storage_space_low",
                                "1 while new jobs and queues are refused for lack of space.",
                                value=1 if self._snap.space_low else 0)
        commit = HistogramMetricFamily(
            "overhop_commit_seconds", "One commit in the writer process: its operations, "
            "then the commit with its data sync.")
        _add(commit, [], self._snap.commit)
        sync = HistogramMetricFamily(
            "overhop_disk_sync_seconds", "One explicit sync of the data file (the syncer's "
            "meta-page sync when idle, or the flush of storage.sync = false).")
        _add(sync, [], self._snap.sync)
        yield from (commit, sync)


def render_text(snapshot: Snapshot, writer_pid: int | None) -> bytes:
    """The exposition text of a snapshot, with process metrics for the server
    (`process_*`) and its writer process (`overhop_writer_process_*`). Thread-safe."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    ProcessCollector(registry=registry)
    if writer_pid is not None:
        ProcessCollector(namespace="overhop_writer", pid=lambda: writer_pid,
                         registry=registry)
    return generate_latest(registry)
