"""What a step can say about a reply. Each helper raises `Mismatch` naming the field."""

from datetime import datetime
from typing import Any


class Mismatch(Exception):
    """A reply differs from what the protocol says; str() says how."""


def field(payload: dict[str, Any], key: str) -> Any:
    """`payload[key]`, which must be present."""
    if key not in payload:
        raise Mismatch(f"{key!r} is missing (keys: {sorted(payload)})")
    return payload[key]


def equal(actual: Any, expected: Any, what: str) -> None:
    if actual != expected:
        raise Mismatch(f"{what}: expected {expected!r}, got {actual!r}")


def text(payload: dict[str, Any], key: str) -> str:
    """A non-empty string field."""
    value = field(payload, key)
    if type(value) is not str or not value:
        raise Mismatch(f"{key}: expected a non-empty string, got {value!r}")
    return value


def integer(payload: dict[str, Any], key: str, low: int = 0) -> int:
    value = field(payload, key)
    if type(value) is not int or value < low:
        raise Mismatch(f"{key}: expected an integer >= {low}, got {value!r}")
    return value


def time(payload: dict[str, Any], key: str) -> datetime:
    """An RFC 3339 time in UTC with `Z`, as the server writes every time."""
    value = text(payload, key)
    if not value.endswith("Z"):
        raise Mismatch(f"{key}: expected a UTC time ending in Z, got {value!r}")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise Mismatch(f"{key}: {value!r} is not an RFC 3339 time") from None


def mapping(payload: dict[str, Any], key: str) -> dict[str, Any]:
    value = field(payload, key)
    if type(value) is not dict:
        raise Mismatch(f"{key}: expected a map, got {value!r}")
    return value


def keys(payload: dict[str, Any], *names: str) -> None:
    """Every one of `names` is present."""
    missing = [name for name in names if name not in payload]
    if missing:
        raise Mismatch(f"missing {', '.join(missing)} (keys: {sorted(payload)})")


def empty(payload: dict[str, Any]) -> None:
    equal(payload, {}, "payload")
