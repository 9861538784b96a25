"""protocol/PROTOCOL.md agrees with the code's tables.

The spec's message table must list exactly the members of `MessageType` (number, name and
direction) and give each its own section; its ERR table must list exactly the members of
`ErrorCode`; its job status section must list exactly the moves of `jobs.TRANSITIONS`, each
with its reason, and draw each of them in the diagram.
"""

import re
from pathlib import Path

from overhop.broker.jobs import TRANSITIONS
from overhop.wire.errors import ErrorCode
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
