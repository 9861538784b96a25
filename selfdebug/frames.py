"""Printing what goes over the wire: one line per frame, `OUT`/`IN`, the type's name, the
rid and the payload as JSON (binary as `{"$bin": "<hex>"}`), and one line per step.
ANSI colours only when the output is a terminal."""

import json
from typing import Any, TextIO

from overhop_client.messages import PUSH_RID, MessageType

RESET = "\033[0m"
BOLD = "\033[1m"
RED = "\033[31m"
GREEN = "\033[32m"
YELLOW = "\033[33m"
BLUE = "\033[34m"
MAGENTA = "\033[35m"
CYAN = "\033[36m"


def type_name(message_type: int) -> str:
    try:
        return MessageType(message_type).name
    except ValueError:
        return f"type {message_type}"


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return {"$bin": bytes(value).hex()}
    return repr(value)


def render_payload(payload: Any) -> str:
    return json.dumps(payload, default=_json_default, ensure_ascii=False)


class FramePrinter:
    def __init__(self, out: TextIO, *, color: bool) -> None:
        self._out = out
        self._color = color

    def _paint(self, text: str, *codes: str) -> str:
        return f"{''.join(codes)}{text}{RESET}" if self._color and codes else text

    def _write(self, line: str) -> None:
        self._out.write(line + "\n")
        self._out.flush()

    def frame(self, direction: str, message_type: int, rid: str, payload: Any) -> None:
        """One frame: `OUT`/`IN`, its type, its rid (`push` for rid "0" from the server)."""
        name = type_name(message_type)
        if direction == "OUT":
            colour = CYAN
        elif message_type == MessageType.ERR:
            colour = RED
        elif rid == PUSH_RID:
            colour = MAGENTA
        else:
            colour = GREEN
        rid_text = "rid=0 (push)" if direction == "IN" and rid == PUSH_RID else f"rid={rid}"
        self._write(f"{self._paint(direction.ljust(3), BOLD, colour)} "
                    f"{self._paint(name.ljust(11), colour)} {rid_text.ljust(13)} "
                    f"{render_payload(payload)}")

    def step_started(self, number: int, name: str) -> None:
        self._write(self._paint(f"-- step {number}: {name}", BLUE))

    def step_passed(self, number: int, name: str) -> None:
        self._write(self._paint(f"ok step {number}: {name}", GREEN))

    def step_failed(self, number: int, name: str, reason: str, spec: str) -> None:
        self._write(self._paint(f"FAILED step {number}: {name}: {reason}", BOLD, RED))
        self._write(self._paint(f"   PROTOCOL.md: {spec}", RED))

    def note(self, text: str) -> None:
        self._write(self._paint(text, YELLOW))

    def summary(self, text: str, *, passed: bool) -> None:
        self._write(self._paint(text, BOLD, GREEN if passed else RED))
