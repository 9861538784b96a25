"""When a schedule's occurrences fall: cron expressions in a time zone, by `cronsim`.

Pure: every function takes the times it works from. Times are integer milliseconds since
the epoch, UTC; occurrences fall on whole seconds. `cronsim` parses the expression (five
fields, or six with seconds first) and walks the calendar in the schedule's zone
(`zoneinfo`), handling daylight saving time the way Debian's cron does for five-field
expressions: an occurrence in the skipped hour fires right after the jump, one in the
repeated hour fires once (docs/scheduling.md).
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from overhop.errors import ErrorCode, RequestError
from overhop.model.schedules import MissedPolicy, ScheduleRecord

# Longest cron expression and zone name accepted: far above any real one, and bounded so a
# request cannot make the parser work through megabytes.
MAX_CRON_LENGTH = 256
MAX_TIMEZONE_LENGTH = 64
DEFAULT_TIMEZONE = "UTC"


@dataclass(frozen=True, slots=True)
class CronSpec:
    """A parsed cron expression and its zone."""

    expression: str
    zone: ZoneInfo

    def next_after(self, after_ms: int) -> int | None:
        """The first occurrence strictly after `after_ms`; None if there is none within
        cronsim's horizon (50 years)."""
        try:
            found = next(CronSim(self.expression, _local(after_ms, self.zone)))
        except StopIteration:
            return None
        return int(found.timestamp()) * 1000

    def latest_at_or_before(self, at_ms: int) -> int | None:
        """The last occurrence at or before `at_ms`. Walking back, cronsim starts strictly
        before a whole second, or at the second itself when the start has a fraction; so
        starting one millisecond after `at_ms` finds the occurrences at or before it."""
        try:
            found = next(CronSim(self.expression, _local(at_ms + 1, self.zone), reverse=True))
        except StopIteration:
            return None
        return int(found.timestamp()) * 1000


def _local(ms: int, zone: ZoneInfo) -> datetime:
    """`ms` as a time in `zone`, exactly (no float rounding of the milliseconds)."""
    seconds, millis = divmod(ms, 1000)
    return (datetime.fromtimestamp(seconds, UTC) + timedelta(milliseconds=millis)
            ).astimezone(zone)


def parse_timezone(value: object) -> ZoneInfo:
    if value is None:
        return ZoneInfo(DEFAULT_TIMEZONE)
    if type(value) is not str or not value or len(value) > MAX_TIMEZONE_LENGTH:
        raise RequestError(ErrorCode.BAD_TIMEZONE,
                           f"'tz' must be an IANA time zone name such as 'Europe/Berlin', "
                           f"at most {MAX_TIMEZONE_LENGTH} characters")
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise RequestError(ErrorCode.BAD_TIMEZONE,
                           f"unknown time zone {value!r} (an IANA name such as "
                           "'Europe/Berlin' or 'UTC')") from None


def parse_cron(expression: object, zone: ZoneInfo, now_ms: int) -> CronSpec:
    """A checked expression: five fields (minute first) or six (second first), with at
    least one occurrence to come after `now_ms`."""
    if type(expression) is not str or not expression.strip():
        raise RequestError(ErrorCode.BAD_CRON, "'cron' must be a non-empty string")
    if len(expression) > MAX_CRON_LENGTH:
        raise RequestError(ErrorCode.BAD_CRON,
                           f"'cron' is longer than {MAX_CRON_LENGTH} characters")
    spec = CronSpec(" ".join(expression.split()), zone)
    try:
        CronSim(spec.expression, _local(now_ms, zone))
    except (CronSimError, ValueError) as exc:
        raise RequestError(ErrorCode.BAD_CRON,
                           f"bad cron expression {expression!r}: {exc}") from None
    if spec.next_after(now_ms) is None:
        raise RequestError(ErrorCode.BAD_CRON,
                           f"cron expression {expression!r} has no occurrence to come")
    return spec


def spec_of(record: ScheduleRecord) -> CronSpec:
    """The spec of a stored schedule (checked when it was added)."""
    return CronSpec(record.cron, ZoneInfo(record.timezone))


@dataclass(frozen=True, slots=True)
class BootPlan:
    """What a schedule does when the server starts: whether occurrences were missed while
    it was down, maybe one fire for them (`fire_ms`, the occurrence it is stamped with),
    and its next run."""

    missed: bool
    fire_ms: int | None
    next_run_ms: int | None


def plan_boot(spec: CronSpec, record: ScheduleRecord, now_ms: int) -> BootPlan:
    """Apply the missed policy. Only occurrences after `record.fired_up_to_ms` count, so
    an occurrence persisted as the last fire never fires again."""
    if record.paused:
        return BootPlan(False, None, None)
    first_missed = spec.next_after(record.fired_up_to_ms)
    if first_missed is None or first_missed > now_ms:
        return BootPlan(False, None, first_missed)
    if record.missed is MissedPolicy.SKIP:
        return BootPlan(True, None, spec.next_after(now_ms))
    latest = spec.latest_at_or_before(now_ms)
    if latest is None or latest < first_missed:  # a DST quirk of walking backwards
        latest = first_missed
    return BootPlan(True, latest, spec.next_after(max(now_ms, latest)))
