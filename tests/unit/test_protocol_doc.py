"""protocol/PROTOCOL.md agrees with the code's tables.

The spec's message table must list exactly the members of `MessageType` (number, name and
direction) and give each its own section; its ERR table must list exactly the members of
`ErrorCode`; its job status section must list exactly the moves of `jobs.TRANSITIONS`, each
with its reason, and draw each of them in the diagram. Its queue settings table must list
exactly the fields of `QueueConfig` with the ranges the parser enforces, REGISTER's
`limits` table exactly the fields of the reply, and the `blocked_by` table exactly the
reasons `explain_job` gives.
"""

import inspect
import re
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from overhop.broker.explain import explain_job
from overhop.config.schema import Config
from overhop.errors import ErrorCode
from overhop.model.jobs import TRANSITIONS
from overhop.model.queues import _INT_SETTINGS as INT_SETTINGS
from overhop.model.queues import BackoffKind, QueueConfig
from overhop.server.handlers import handle_register
from overhop.wire.messages import MessageType

SPEC_PATH = Path(__file__).resolve().parents[2] / "protocol" / "PROTOCOL.md"
SPEC = SPEC_PATH.read_text(encoding="utf-8")
LINES = SPEC.splitlines()

HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
MESSAGE_ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*([A-Z_]+)\s*\|\s*([^|]*?)\s*\|")
ERROR_ROW = re.compile(r"^\|\s*`([A-Z_]+)`\s*\|")
TRANSITION_ITEM = re.compile(r"^- `([a-z_]+) → ([a-z_]+)` — (.*)$")
DIAGRAM_EDGE = re.compile(r"^\s*([a-z_]+)\s*-->\s*([a-z_]+)\s*:")


def section(title: str) -> list[str]:
    """The lines under the first heading whose text matches `title`, up to the next heading
    of the same or a higher level."""
    pattern = re.compile(title)
    for index, line in enumerate(LINES):
        match = HEADING.match(line)
        if match and pattern.search(match.group(2)):
            level = len(match.group(1))
            body: list[str] = []
            for following in LINES[index + 1:]:
                other = HEADING.match(following)
                if other and len(other.group(1)) <= level:
                    break
                body.append(following)
            return body
    raise AssertionError(f"PROTOCOL.md has no heading matching {title!r}")


# -- (a) the message table ---------------------------------------------------------------


def message_rows() -> list[tuple[int, str, str]]:
    rows = []
    for line in section(r"^Message table$"):
        match = MESSAGE_ROW.match(line)
        if match:
            rows.append((int(match.group(1)), match.group(2), match.group(3)))
    return rows


def test_message_table_lists_exactly_the_message_types() -> None:
    rows = message_rows()
    listed = [(number, name) for number, name, _ in rows]
    assert len(listed) == len(set(listed)), "a message is listed twice"
    expected = {(int(member), member.name) for member in MessageType}
    assert set(listed) == expected, (
        f"missing: {sorted(expected - set(listed))}; not in MessageType: "
        f"{sorted(set(listed) - expected)}"
    )


def test_message_table_directions_follow_the_type_numbers() -> None:
    for number, name, direction in message_rows():
        wanted = "client → server" if MessageType(number).is_client_type else "server → client"
        assert direction == wanted, f"{number} {name}: direction {direction!r}"


def test_every_message_type_has_its_own_section() -> None:
    headings = {match.group(2).strip() for line in LINES if (match := HEADING.match(line))}
    for member in MessageType:
        title = f"{int(member)} {member.name}"
        assert title in headings, f"no section '### {title}'"


# -- (b) the ERR table -------------------------------------------------------------------


def test_err_table_lists_exactly_the_error_codes() -> None:
    codes = [match.group(1) for line in section(r"ERR codes$")
             if (match := ERROR_ROW.match(line))]
    assert len(codes) == len(set(codes)), "an ERR code is listed twice"
    expected = {code.value for code in ErrorCode}
    assert set(codes) == expected, (
        f"missing: {sorted(expected - set(codes))}; not in ErrorCode: "
        f"{sorted(set(codes) - expected)}"
    )


# -- (c) job status transitions ----------------------------------------------------------


def test_status_section_lists_exactly_the_transitions_with_their_reasons() -> None:
    listed: dict[tuple[str, str], str] = {}
    for line in section(r"Job statuses$"):
        match = TRANSITION_ITEM.match(line)
        if match:
            pair = (match.group(1), match.group(2))
            assert pair not in listed, f"{pair} is listed twice"
            listed[pair] = match.group(3)
    expected = {(old.label, new.label): reason for (old, new), reason in TRANSITIONS.items()}
    assert set(listed) == set(expected), (
        f"missing: {sorted(set(expected) - set(listed))}; not in TRANSITIONS: "
        f"{sorted(set(listed) - set(expected))}"
    )
    for pair, reason in expected.items():
        assert listed[pair].startswith(reason), f"{pair}: reason should start {reason!r}"


def test_status_diagram_draws_every_transition() -> None:
    edges = {(match.group(1), match.group(2)) for line in section(r"Job statuses$")
             if (match := DIAGRAM_EDGE.match(line))}
    for old, new in TRANSITIONS:
        assert (old.label, new.label) in edges, f"diagram lacks {old.label} --> {new.label}"


# -- (d) queue settings, REGISTER limits, blocked_by reasons, client type range ----------

SETTING_ROW = re.compile(r"^\|\s*`([a-z_]+)`\s*\|\s*([a-z]+)\s*\|\s*([^|]*?)\s*\|")
TABLE_KEY_ROW = re.compile(r"^\s*\|\s*`([a-z_]+)`\s*\|")
SETTING_TYPES = {int: "integer", bool: "boolean", str: "string"}


def test_queue_settings_table_lists_exactly_the_settings_with_their_ranges() -> None:
    rows = {match.group(1): (match.group(2), match.group(3))
            for line in section(r"^Queue settings$") if (match := SETTING_ROW.match(line))}
    names = [field.name for field in fields(QueueConfig)]
    assert sorted(rows) == sorted(names), (
        f"missing: {sorted(set(names) - set(rows))}; not settings: "
        f"{sorted(set(rows) - set(names))}")
    for name, (kind, limits) in rows.items():
        if name in INT_SETTINGS:
            low, high = INT_SETTINGS[name]
            assert (kind, limits) == ("integer", f"{low}..{high}"), name
        elif name == "backoff":
            assert kind == "string", name
            assert all(f'`"{member.value}"`' in limits for member in BackoffKind), name
        else:
            assert kind == SETTING_TYPES[type(getattr(QueueConfig(), name))], name


def test_register_limits_table_lists_exactly_the_reply_fields() -> None:
    class Conn:
        def become_worker(self, metadata: dict[str, Any]) -> SimpleNamespace:
            return SimpleNamespace(worker_id="w")

    reply = handle_register(SimpleNamespace(config=Config()), Conn(), {})  # type: ignore[arg-type]
    assert isinstance(reply, dict)
    body = section(r"^2 REGISTER$")
    start = next(i for i, line in enumerate(body) if "`limits`" in line)
    listed = {match.group(1) for line in body[start:] if (match := TABLE_KEY_ROW.match(line))}
    assert listed == set(reply["limits"])


def test_blocked_by_table_lists_exactly_the_reasons() -> None:
    source = inspect.getsource(explain_job)
    reasons = set(re.findall(r'"reason": "([a-z_]+)"', source))
    for line in source.splitlines():
        if line.strip().startswith("reason ="):  # reason = "a" if ... else "b"
            reasons.update(re.findall(r'"([a-z_]+)"', line))
    table: list[str] = []
    for line in SPEC[SPEC.index("`blocked_by` answers"):].splitlines():
        if table and not line.startswith("|"):
            break
        if line.startswith("|"):
            table.append(line)
    listed = {match.group(1) for line in table[2:] if (match := TABLE_KEY_ROW.match(line))}
    assert listed == reasons


def test_envelope_table_names_the_client_type_range() -> None:
    highest = max(int(t) for t in MessageType if t.is_client_type)
    assert f"(1..{highest} today;" in SPEC
