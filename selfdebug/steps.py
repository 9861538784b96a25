"""The step runner: one `Step` per request (or expected push), run in order against a raw
client; the first step whose answer differs from what it expects stops the walk.

A step sends `send` with the payload `payload(state)` and takes the reply with the same
rid, or, without `send`, takes the next push. The answer must be of type `expect`, then
`check(state, payload)` must not raise `Mismatch` (it may record values in `state` for
later steps, such as a job id or a delivery id). With `then_closed`, the server must also
close the connection. Steps are plain data: a test can replace one expectation with a
wrong one and see the walk fail at that step.
"""

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from overhop_client.messages import MessageType

from selfdebug.checks import Mismatch
from selfdebug.frames import FramePrinter, render_payload, type_name
from selfdebug.wire import ConnectionClosed, RawClient

State = dict[str, Any]
# Every answer of a healthy local server takes milliseconds (a write: one fsync); five
# seconds is a hung server, not a slow disk.
STEP_TIMEOUT_S = 5.0


def _no_payload(state: State) -> dict[str, Any]:
    return {}


def _accept(state: State, payload: dict[str, Any]) -> None:
    return None


@dataclass(frozen=True)
class Step:
    name: str
    """How the step is reported: the message type, with what is special about it."""
    send: MessageType | None
    """The request to send; None: take the next push instead."""
    expect: MessageType
    """The type of the answer (OK, HI, PONG, ERR, QUEST, ...)."""
    spec: str
    """What PROTOCOL.md says the answer is, shown when the step fails."""
    payload: Callable[[State], dict[str, Any]] = _no_payload
    check: Callable[[State, dict[str, Any]], None] = _accept
    then_closed: bool = False


@dataclass
class Report:
    passed: list[str] = field(default_factory=list)
    failed_step: str | None = None
    failed_number: int | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.failed_step is None


async def _answer(client: RawClient, step: Step, state: State) -> tuple[int, dict[str, Any]]:
    if step.send is None:
        envelope = await client.push()
    else:
        rid = await client.send(step.send, step.payload(state))
        envelope = await client.reply(rid)
    return envelope.type, envelope.payload


async def run_step(client: RawClient, step: Step, state: State, timeout: float) -> None:
    """Run one step; Mismatch when its answer is not the expected one."""
    try:
        async with asyncio.timeout(timeout):
            message_type, payload = await _answer(client, step, state)
    except TimeoutError:
        raise Mismatch(f"no answer within {timeout:g} s") from None
    except ConnectionClosed as exc:
        raise Mismatch(str(exc)) from None
    if message_type != step.expect:
        raise Mismatch(f"expected {type_name(step.expect)}, got {type_name(message_type)} "
                       f"{render_payload(payload)}")
    try:
        step.check(state, payload)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise Mismatch(f"unexpected reply shape: {exc!r}") from None
    if step.then_closed:
        try:
            async with asyncio.timeout(timeout):
                await client.wait_closed()
        except TimeoutError:
            raise Mismatch(f"the server did not close the connection within {timeout:g} s"
                           ) from None


async def run_steps(client: RawClient, steps: Sequence[Step], printer: FramePrinter,
                    timeout: float = STEP_TIMEOUT_S) -> Report:
    """Run the steps in order until one fails; what passed, and the failure if any."""
    state: State = {}
    report = Report()
    for number, step in enumerate(steps, 1):
        printer.step_started(number, step.name)
        try:
            await run_step(client, step, state, timeout)
        except Mismatch as exc:
            printer.step_failed(number, step.name, str(exc), step.spec)
            report.failed_step, report.failed_number, report.reason = (
                step.name, number, str(exc))
            return report
        printer.step_passed(number, step.name)
        report.passed.append(step.name)
    return report
