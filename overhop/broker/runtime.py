"""What the scheduler knows of each queue between commits: its record, subscriptions,
slots in use, the waiting estimate, rate window and the flags of work in flight."""

from collections import deque
from dataclasses import dataclass, field

from overhop.broker.workers import Subscription
from overhop.config.sections import JobsConfig
from overhop.model.queues import JobPolicy, QueueRecord, resolve_policy

# Jobs moved to active by one dispatch transaction at most: big enough to amortise a commit
# over a burst, small enough that one queue's burst does not delay other queues' commits.
MAX_DISPATCH_BATCH = 256
# Jobs one plan gives one subscription at most: the QUESTs of a plan reach a peer together,
# so this bounds what a burst adds to a peer's output before back-pressure can see it.
MAX_PER_SUBSCRIPTION = 32


class RateWindow:
    """Starts in the last `window_ms`, for a queue's rate limit (a sliding window).

    Kept as (time, count) entries, one per dispatch plan, so its size follows the number of
    plans in a window, not the number of jobs.
    """

    __slots__ = ("_entries", "_total")

    def __init__(self) -> None:
        self._entries: deque[tuple[int, int]] = deque()
        self._total = 0

    def _expire(self, now_ms: int, window_ms: int) -> None:
        entries = self._entries
        while entries and entries[0][0] <= now_ms - window_ms:
            self._total -= entries.popleft()[1]

    def allowance(self, limit: int, window_ms: int, now_ms: int) -> int:
        self._expire(now_ms, window_ms)
        return max(0, limit - self._total)

    def started(self, window_ms: int, now_ms: int) -> int:
        self._expire(now_ms, window_ms)
        return self._total

    def record(self, now_ms: int, count: int) -> None:
        if count:
            self._entries.append((now_ms, count))
            self._total += count

    def next_opening_ms(self, window_ms: int) -> int | None:
        """When the oldest start leaves the window (and a slot opens)."""
        return self._entries[0][0] + window_ms if self._entries else None


@dataclass(slots=True, eq=False)
class QueueRuntime:
    """What the scheduler knows of one queue between commits."""

    record: QueueRecord
    subscriptions: list[Subscription] = field(default_factory=list)
    active: int = 0
    waiting_estimate: int = 0
    waiting_added: int = 0
    dispatch_in_flight: bool = False
    next_turn: int = 0
    next_due_ms: int | None = None
    new_pending: bool = False
    maintenance_in_flight: bool = False
    retention_in_flight: bool = False
    rate: RateWindow = field(default_factory=RateWindow)
    policy_cache: tuple[QueueRecord, JobPolicy] | None = None
    # Deliveries whose end is being written, delivery id -> job id. Their slots are free
    # already; with a concurrency limit, a dispatch may use them only if those ends commit.
    ending: dict[str, str] = field(default_factory=dict)
    # Jobs this queue's dispatches asked for since boot: places the fair-share picks.
    dispatched: int = 0
    # Waiting jobs held back by their group's limit, as the last dispatch found them: an
    # end in the queue may free one, so it is worth a dispatch (`Scheduler.slot_freed`).
    blocked_waiting: int = 0
    # Cluster mode: the queue is being handed to another broker; no dispatch starts.
    leaving: bool = False

    def dispatch_guards(self, slots: int) -> list[tuple[str, str]]:
        """(delivery id, job id) of the ends a dispatch of `slots` jobs planned now depends
        on: none without a concurrency limit (no slot to double-use), nor when the slots
        free without the lent ones are enough."""
        limit = self.record.config.concurrency_limit
        if not self.ending or limit is None:
            return []
        if slots <= limit - self.active - len(self.ending):
            return []
        return list(self.ending.items())

    def rate_allowance(self, now_ms: int) -> int:
        """Jobs the rate limit lets start now (unbounded without a limit)."""
        config = self.record.config
        if config.rate_limit is None:
            return MAX_DISPATCH_BATCH
        return self.rate.allowance(config.rate_limit, config.rate_window_ms, now_ms)

    def default_policy(self, jobs: JobsConfig) -> JobPolicy:
        """The settings in force for a job without overrides (kept until the record changes)."""
        cached = self.policy_cache
        if cached is None or cached[0] is not self.record:
            policy = resolve_policy(None, None, None, self.record.config, jobs.default_max_attempts,
                                    jobs.default_retry_interval_ms, jobs.default_lease_ms)
            self.policy_cache = cached = (self.record, policy)
        return cached[1]

    def free_slots(self) -> int:
        limit = self.record.config.concurrency_limit
        return MAX_DISPATCH_BATCH if limit is None else max(0, limit - self.active)
