"""`/metrics`: the Prometheus text, computed at scrape time from what the broker counts.

Nothing is registered on the hot path: the broker and the writer keep plain counters and
fixed-bucket histograms (`overhop.observability.tally`), and this collector reads them,
the broker's in-memory view and the store's per-queue counters (one short read
transaction per queue) when Prometheus asks. docs/metrics.md lists every family.
"""

from collections.abc import Iterator

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
from overhop.observability.tally import Histogram, QueueTally

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _le(bound: float) -> str:
    """A bucket bound as Prometheus writes it (`0.005`, `1.0`, `+Inf`)."""
    return "+Inf" if bound == float("inf") else repr(float(bound))


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    return [(_le(bound), count) for bound, count in histogram.cumulative()]


class BrokerCollector(Collector):
    def __init__(self, sources: Sources) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        yield from self._info()
        yield from self._queues()
        yield from self._flows()
        yield from self._pools()
        yield from self._storage()

    def _info(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("overhop_build_info", "Always 1; the version as a label.",
                                 labels=["version"])
        info.add_metric([__version__], 1)
        yield info

    def _queues(self) -> Iterator[Metric]:
        s = self._sources
        now = s.clock()
        jobs = GaugeMetricFamily("overhop_jobs", "Jobs by queue and status (exact: read from "
                                 "the counters kept with the records).", labels=["queue", "status"])
        oldest = GaugeMetricFamily(
            "overhop_queue_oldest_waiting_age_seconds",
            "Age of the queue's oldest waiting job (since its creation); 0 when none waits.",
            labels=["queue"])
        in_use = GaugeMetricFamily("overhop_queue_concurrency_in_use",
                                   "Jobs of the queue out to workers now.", labels=["queue"])
        limit = GaugeMetricFamily("overhop_queue_concurrency_limit",
                                  "The queue's concurrency limit (queues with one).",
                                  labels=["queue"])
        rate = GaugeMetricFamily("overhop_queue_rate_limit",
                                 "Jobs the queue may start per rate window (queues with one).",
                                 labels=["queue"])
        window = GaugeMetricFamily("overhop_queue_rate_window_seconds",
                                   "Length of the queue's rate window (queues with a rate limit).",
                                   labels=["queue"])
        paused = GaugeMetricFamily("overhop_queue_paused", "1 when the queue is paused.",
                                   labels=["queue"])
        subscriptions = GaugeMetricFamily("overhop_subscriptions",
                                          "Worker subscriptions to the queue.", labels=["queue"])
        credits = GaugeMetricFamily("overhop_queue_credits",
                                    "Credits the queue's subscriptions have left.",
                                    labels=["queue"])
        for name, runtime in list(s.broker.queues.items()):
            record = runtime.record
            if record.is_system:
                continue
            counts = s.store.counts(name)
            for status in JobStatus:
                jobs.add_metric([name, status.label], counts[status])
            created = s.store.oldest_created_ms(name, JobStatus.WAITING)
            oldest.add_metric([name], 0 if created is None else max(0, now - created) / 1000)
            in_use.add_metric([name], runtime.active)
            config = record.config
            if config.concurrency_limit is not None:
                limit.add_metric([name], config.concurrency_limit)
            if config.rate_limit is not None:
                rate.add_metric([name], config.rate_limit)
                window.add_metric([name], config.rate_window_ms / 1000)
            paused.add_metric([name], 1 if record.state == QueueState.PAUSED else 0)
            subscriptions.add_metric([name], len(runtime.subscriptions))
            credits.add_metric([name], sum(sub.credits for sub in runtime.subscriptions
                                           if sub.active))
        yield from (jobs, oldest, in_use, limit, rate, window, paused, subscriptions, credits)

    def _flows(self) -> Iterator[Metric]:
        broker = self._sources.broker
        tally = broker.tally
        tally.keep_queues(set(broker.queues))
        enqueued = CounterMetricFamily("overhop_jobs_enqueued",
                                       "Jobs accepted by ENQUEUE and ENQUEUEMANY.",
                                       labels=["queue"])
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
        queues: list[tuple[str, QueueTally]] = sorted(tally.queues.items())
        for name, queue in queues:
            enqueued.add_metric([name], queue.enqueued)
            for outcome, count in sorted(queue.ended.items()):
                ended.add_metric([name, outcome], count)
            wait.add_metric([name], _buckets(queue.wait), queue.wait.sum)
            run.add_metric([name], _buckets(queue.run), queue.run.sum)
        workers = CounterMetricFamily(
            "overhop_worker_jobs",
            "Deliveries ended, by the worker's REGISTER name and outcome (at most 100 names; "
            "later ones count as _other, nameless workers as _unnamed).",
            labels=["worker", "outcome"])
        for (worker, outcome), count in sorted(tally.worker_jobs.items()):
            workers.add_metric([worker, outcome], count)
        delivered = CounterMetricFamily("overhop_deliveries", "QUESTs sent.")
        delivered.add_metric([], broker.dispatched_total)
        yield from (enqueued, ended, wait, run, workers, delivered)

    def _pools(self) -> Iterator[Metric]:
        s = self._sources
        for name, doc, value in (
            ("overhop_connections", "Open client connections.", len(s.connections)),
            ("overhop_workers", "Registered workers (connections past REGISTER).",
             len(s.broker.workers)),
            ("overhop_deliveries_in_flight", "Jobs out to workers now.",
             len(s.broker.deliveries)),
            ("overhop_uptime_seconds", "Seconds since the server started.",
             s.uptime_seconds()),
        ):
            family = GaugeMetricFamily(name, doc)
            family.add_metric([], value)
            yield family

    def _storage(self) -> Iterator[Metric]:
        s = self._sources
        usage = s.store.usage()
        storage = GaugeMetricFamily(
            "overhop_storage_bytes",
            "Storage: map_size (mapped now), used (up to the high-water page), file (on disk),"
            " max (storage.max_map_size_bytes).", labels=["kind"])
        for kind, value in (("map_size", usage.map_size_bytes), ("used", usage.used_bytes),
                            ("file", usage.file_bytes),
                            ("max", s.config.storage.max_map_size_bytes)):
            storage.add_metric([kind], value)
        low = GaugeMetricFamily("overhop_storage_space_low",
                                "1 while new jobs and queues are refused for lack of space.")
        low.add_metric([], 1 if s.writer.space_low else 0)
        commits = CounterMetricFamily("overhop_commits", "Write transactions committed.")
        commits.add_metric([], s.writer.commits)
        operations = CounterMetricFamily("overhop_write_operations",
                                         "Write operations committed (many per commit).")
        operations.add_metric([], s.writer.operations)
        timings = s.writer.timings
        commit = HistogramMetricFamily(
            "overhop_commit_seconds", "One commit in the writer process: its operations, "
            "then the commit with its data sync.")
        commit.add_metric([], _buckets(timings.commit), timings.commit.sum)
        sync = HistogramMetricFamily(
            "overhop_disk_sync_seconds", "One explicit sync of the data file (the syncer's "
            "meta-page sync when idle, or the flush of storage.sync = false).")
        sync.add_metric([], _buckets(timings.sync), timings.sync.sum)
        yield from (storage, low, commits, operations, commit, sync)


def build_registry(sources: Sources) -> CollectorRegistry:
    """The broker's collector, and process metrics for the server (`process_*`) and its
    writer process (`overhop_writer_process_*`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(sources))
    ProcessCollector(registry=registry)
    writer = sources.writer
    ProcessCollector(namespace="overhop_writer", pid=lambda: writer.pid or "self",
                     registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
