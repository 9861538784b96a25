"""How the commands print: aligned tables, `key  value` fields, cells, durations, JSON.

Human output is aligned tables. With `--json` a read prints the server's reply as the
protocol defines it (binary values as `{"$bin": "<hex>"}`, the convention of the
protocol's test vectors) and a write prints a small object saying what it did.
"""

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import click
from overhop_client.times import format_time


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return {"$bin": bytes(value).hex()}
    raise TypeError(f"{type(value).__name__} is not JSON")


def to_json(value: Any, *, indent: int | None = 2) -> str:
    """`value` as JSON text, bytes as `{"$bin": "<hex>"}`."""
    return json.dumps(value, indent=indent, default=_json_default, ensure_ascii=False)


def emit_json(value: Any) -> None:
    """Print `value` as indented JSON."""
    click.echo(to_json(value))


def cell(value: Any) -> str:
    """A value as a table shows it: '-' for None, times in RFC 3339, JSON for data."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, timedelta):
        return duration(value)
    if isinstance(value, str | int | float):
        return str(value)
    return to_json(value, indent=None)


def duration(value: timedelta) -> str:
    """A duration in the largest whole unit: `250ms`, `2s`, `5m`, `1h`."""
    ms = round(value / timedelta(milliseconds=1))
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Aligned columns, a header line first; numbers right-aligned, the rest left."""
    cells = [[cell(value) for value in row] for row in rows]
    widths = [max([len(header)] + [len(row[i]) for row in cells])
              for i, header in enumerate(headers)]
    numeric = [any(_is_number(row[i]) for row in rows)
               and all(_is_number(row[i]) or row[i] is None for row in rows)
               for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [value.rjust(width) if right else value.ljust(width)
                 for value, width, right in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(row) for row in cells)])


def fields(pairs: Sequence[tuple[str, Any]]) -> str:
    """`key  value` lines with the values aligned."""
    width = max(len(key) for key, _ in pairs)
    return "\n".join(f"{key.ljust(width)}  {cell(value)}" for key, value in pairs)
