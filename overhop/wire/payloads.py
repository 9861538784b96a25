"""Parsing request payload fields into typed values, or INVALID_PAYLOAD naming the field."""

from typing import Any

from overhop.clock import parse_rfc3339
from overhop.errors import ErrorCode, RequestError


def _invalid(message: str) -> RequestError:
    return RequestError(ErrorCode.INVALID_PAYLOAD, message)


def parse_str(payload: dict[str, Any], key: str, *, max_length: int = 1024) -> str:
    value = payload.get(key)
    if type(value) is not str or not value:
        raise _invalid(f"'{key}' must be a non-empty string")
    if len(value) > max_length:
        raise _invalid(f"'{key}' is longer than {max_length}")
    return value


def parse_optional_str(payload: dict[str, Any], key: str, *, max_length: int = 1024
                       ) -> str | None:
    if payload.get(key) is None:
        return None
    return parse_str(payload, key, max_length=max_length)


def parse_int(payload: dict[str, Any], key: str, *, low: int, high: int = 2**63 - 1,
              default: int | None = None) -> int:
    value = payload.get(key)
    if value is None and default is not None:
        return default
    if type(value) is not int:
        raise _invalid(f"'{key}' must be an integer")
    if not low <= value <= high:
        raise _invalid(f"'{key}' must be in {low}..{high}")
    return value


def parse_optional_int(payload: dict[str, Any], key: str, *, low: int,
                       high: int = 2**63 - 1) -> int | None:
    if payload.get(key) is None:
        return None
    return parse_int(payload, key, low=low, high=high)


def parse_flag(payload: dict[str, Any], key: str) -> bool:
    """An optional bool: False when absent; anything else but a bool (nil too) is refused."""
    value = payload.get(key, False)
    if type(value) is not bool:
        raise _invalid(f"'{key}' must be a bool")
    return value


def parse_optional_time(payload: dict[str, Any], key: str) -> int | None:
    value = payload.get(key)
    if value is None:
        return None
    if type(value) is not str:
        raise _invalid(f"'{key}' must be an RFC 3339 string")
    try:
        return parse_rfc3339(value)
    except ValueError:
        raise _invalid(f"'{key}' is not an RFC 3339 time: {value!r}") from None


def parse_optional_map(payload: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = payload.get(key)
    if value is None:
        return None
    if type(value) is not dict:
        raise _invalid(f"'{key}' must be a map")
    return value
