"""Times and durations between the wire and Python: RFC 3339 strings and whole milliseconds
on the wire, aware `datetime`s and `timedelta`s in this client. Pure.
"""

from datetime import UTC, datetime, timedelta


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 string from the server as an aware datetime; None stays None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"fromisoformat: argument must be str, not {type(value).__name__}")
    return datetime.fromisoformat(value)


def format_time(value: datetime) -> str:
    """An aware datetime as RFC 3339 in UTC with milliseconds (`...T12:00:00.000Z`)."""
    if value.tzinfo is None:
        raise ValueError("times sent to Overhop must be timezone-aware datetimes")
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_ms(value: object) -> timedelta | None:
    """Milliseconds from the server as a timedelta; None stays None."""
    if value is None:
        return None
    if not isinstance(value, int | float):
        raise TypeError(f"milliseconds must be a number, not {type(value).__name__}")
    return timedelta(milliseconds=value)


def to_ms(value: timedelta) -> int:
    """Whole milliseconds of a duration, as the wire wants them."""
    return round(value / timedelta(milliseconds=1))
