"""Structured logging: JSON and console output, level filtering, verbose, reconfiguration."""

import io
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from overhop.logs import LEVELS, configure_logging, get_logger


@pytest.fixture(autouse=True)
def _restore_default_logging() -> Iterator[None]:
    yield
    configure_logging("info", human_friendly=False)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def emit_all(name: str = "test") -> None:
    log = get_logger(name)
    log.error("e")
    log.warn("w")
    log.info("i")
    log.debug("d")
    log.verbose("v")


def test_json_line_fields() -> None:
    out = io.StringIO()
    configure_logging("info", human_friendly=False, stream=out)
    get_logger("overhop.x").info("started", port=9876, path="/d")
    (line,) = lines(out)
    assert line["event"] == "started"
    assert line["level"] == "info"
    assert line["logger"] == "overhop.x"
    assert (line["port"], line["path"]) == (9876, "/d")
    stamp = datetime.fromisoformat(line["timestamp"])
    assert stamp.utcoffset() is not None
    assert stamp.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60


@pytest.mark.parametrize(("level", "expected"), [
    ("error", ["e"]),
    ("warn", ["e", "w"]),
    ("info", ["e", "w", "i"]),
    ("debug", ["e", "w", "i", "d"]),
    ("verbose", ["e", "w", "i", "d", "v"]),
])
def test_level_filtering(level: str, expected: list[str]) -> None:
    out = io.StringIO()
    configure_logging(level, human_friendly=False, stream=out)
    emit_all()
    assert [line["event"] for line in lines(out)] == expected


def test_level_names_in_output() -> None:
    out = io.StringIO()
    configure_logging("verbose", human_friendly=False, stream=out)
    emit_all()
    assert [line["level"] for line in lines(out)] == ["error", "warn", "info", "debug", "verbose"]


def test_is_enabled_for() -> None:
    configure_logging("debug", human_friendly=False, stream=io.StringIO())
    log = get_logger("test")
    assert [lvl for lvl in LEVELS if log.is_enabled_for(lvl)] == ["error", "warn", "info",
                                                                   "debug"]


class Unrenderable:
    def __str__(self) -> str:
        raise AssertionError("a filtered-out event was rendered")

    __repr__ = __str__


def test_filtered_out_calls_do_not_render() -> None:
    out = io.StringIO()
    configure_logging("info", human_friendly=False, stream=out)
    log = get_logger("test")
    log.debug("d", value=Unrenderable())
    log.verbose("v", value=Unrenderable())
    log.bind(value=Unrenderable()).verbose("v")
    assert out.getvalue() == ""


def test_positional_arguments_are_interpolated() -> None:
    out = io.StringIO()
    configure_logging("verbose", human_friendly=False, stream=out)
    log = get_logger("test")
    log.info("%d jobs", 3)
    log.verbose("queue %s", "q1")
    log.verbose("queue %(name)s", {"name": "q2"})
    assert [line["event"] for line in lines(out)] == ["3 jobs", "queue q1", "queue q2"]


def test_bound_values_and_bound_verbose() -> None:
    out = io.StringIO()
    configure_logging("verbose", human_friendly=False, stream=out)
    conn = get_logger("test").bind(conn_id="c1")
    conn.verbose("frame", size=10)
    conn.info("closed")
    assert [(line["event"], line["conn_id"], line["level"]) for line in lines(out)] == [
        ("frame", "c1", "verbose"), ("closed", "c1", "info")]
    assert lines(out)[0]["size"] == 10


def test_contextvars_are_merged() -> None:
    out = io.StringIO()
    configure_logging("info", human_friendly=False, stream=out)
    log = get_logger("test")
    with structlog.contextvars.bound_contextvars(conn_id="c7"):
        log.info("inside")
    log.info("outside")
    inside, outside = lines(out)
    assert inside["conn_id"] == "c7"
    assert "conn_id" not in outside


def test_exception_includes_the_traceback() -> None:
    out = io.StringIO()
    configure_logging("info", human_friendly=False, stream=out)
    try:
        raise ValueError("bad thing")
    except ValueError:
        get_logger("test").exception("failed")
    (line,) = lines(out)
    assert line["level"] == "error"
    assert "Traceback" in line["exception"]
    assert "ValueError: bad thing" in line["exception"]


def test_non_json_values_are_rendered_as_strings() -> None:
    out = io.StringIO()
    configure_logging("info", human_friendly=False, stream=out)
    get_logger("test").info("x", when=datetime(2024, 1, 2, tzinfo=UTC), raw=b"\x01")
    (line,) = lines(out)
    assert line["when"] == "2024-01-02 00:00:00+00:00"
    assert line["raw"] == "b'\\x01'"


def test_human_friendly_without_a_terminal_has_no_colours() -> None:
    out = io.StringIO()
    configure_logging("verbose", human_friendly=True, stream=out)
    get_logger("overhop.x").verbose("listening", port=9876)
    text = out.getvalue()
    assert "\x1b[" not in text
    assert "listening" in text
    assert "verbose" in text
    assert "port=9876" in text
    assert "overhop.x" in text
    assert not text.lstrip().startswith("{")


def test_human_friendly_on_a_terminal_has_colours() -> None:
    master, replica = os.openpty()
    with os.fdopen(replica, "w", encoding="utf-8") as terminal:
        configure_logging("info", human_friendly=True, stream=terminal)
        get_logger("test").warn("careful")
        text = os.read(master, 65536).decode()
    os.close(master)
    assert "careful" in text
    assert "\x1b[" in text


def test_reconfiguring_switches_stream_level_and_format() -> None:
    log = get_logger("test")
    first, second, third = io.StringIO(), io.StringIO(), io.StringIO()
    configure_logging("error", human_friendly=False, stream=first)
    log.info("dropped")
    log.error("one")
    configure_logging("debug", human_friendly=False, stream=second)
    log.debug("two")
    configure_logging("info", human_friendly=True, stream=third)
    log.info("three")
    log.debug("dropped")
    assert [line["event"] for line in lines(first)] == ["one"]
    assert [line["event"] for line in lines(second)] == ["two"]
    assert "three" in third.getvalue()
    assert "dropped" not in first.getvalue() + second.getvalue() + third.getvalue()


def test_default_stream_is_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", human_friendly=False)
    get_logger("test").info("to stderr")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert json.loads(captured.err)["event"] == "to stderr"


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        configure_logging("loud", human_friendly=False)
