"""Session states: every (state, client message) pair, transitions, timeouts on a manual clock."""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overhop.errors import ErrorCode, ProtocolError
from overhop.session.states import (
    ALLOWED,
    TRANSITIONS,
    Session,
    SessionAction,
    SessionLimits,
    SessionState,
)
from overhop.wire.messages import CLIENT_TYPES, MessageType

# Three different limits, so a test notices when one is used in place of another.
LIMITS = SessionLimits(
    unhelloed_max_lifetime_ms=7_000,
    helloed_unregistered_max_lifetime_ms=11_000,
    ident_register_timeout_ms=3_000,
)
# A start time far from zero, so absolute and relative times cannot be confused.
CONNECTED_AT = 1_700_000_000_000

CLIENT_MESSAGES = sorted(CLIENT_TYPES)
PAIRS = list(itertools.product(SessionState, CLIENT_MESSAGES))


def session_in(state: SessionState, now: int = CONNECTED_AT) -> Session:
    """A session brought to `state` through the public API, the way the server does it."""
    session = Session(now)
    if state is SessionState.ANONYMOUS:
        return session
    session.advance(MessageType.HELLO, now)
    if state is SessionState.HELLOED:
        return session
    if state is SessionState.IDENTIFIED:
        session.identify(now, LIMITS)
        return session
    if state is SessionState.AUTHENTICATING:
        session.require_authentication()
        return session
    if state in (SessionState.CHALLENGED, SessionState.AUTHENTICATED):
        session.advance(MessageType.AUTH, now)
        if state is SessionState.AUTHENTICATED:
            session.advance(MessageType.AUTH, now)
        return session
    session.advance(MessageType.REGISTER, now)
    return session


# -- the tables --------------------------------------------------------------------------------


def test_tables_cover_every_state_and_only_client_types() -> None:
    assert set(ALLOWED) == set(SessionState)
    for allowed in ALLOWED.values():
        assert allowed <= CLIENT_TYPES
    for (state, message), target in TRANSITIONS.items():
        assert message in ALLOWED[state]
        assert target in SessionState


def test_the_documented_grammar() -> None:
    assert ALLOWED[SessionState.ANONYMOUS] == {MessageType.HELLO}
    assert ALLOWED[SessionState.HELLOED] == {MessageType.REGISTER, MessageType.AUTH}
    assert ALLOWED[SessionState.IDENTIFIED] == {MessageType.REGISTER}
    assert ALLOWED[SessionState.AUTHENTICATING] == {MessageType.AUTH}
    assert ALLOWED[SessionState.CHALLENGED] == {MessageType.AUTH}
    assert ALLOWED[SessionState.AUTHENTICATED] == {MessageType.REGISTER}
    assert ALLOWED[SessionState.WORKER] == CLIENT_TYPES - {MessageType.HELLO,
                                                          MessageType.REGISTER,
                                                          MessageType.AUTH}
    assert TRANSITIONS == {
        (SessionState.ANONYMOUS, MessageType.HELLO): SessionState.HELLOED,
        (SessionState.HELLOED, MessageType.REGISTER): SessionState.WORKER,
        (SessionState.IDENTIFIED, MessageType.REGISTER): SessionState.WORKER,
        (SessionState.HELLOED, MessageType.AUTH): SessionState.CHALLENGED,
        (SessionState.AUTHENTICATING, MessageType.AUTH): SessionState.CHALLENGED,
        (SessionState.CHALLENGED, MessageType.AUTH): SessionState.AUTHENTICATED,
        (SessionState.AUTHENTICATED, MessageType.REGISTER): SessionState.WORKER,
    }


@pytest.mark.parametrize("state", list(SessionState))
def test_session_in_helper_reaches_each_state(state: SessionState) -> None:
    assert session_in(state).state is state


# -- every (state, message) pair -----------------------------------------------------------------


@pytest.mark.parametrize(("state", "message"), PAIRS,
                         ids=[f"{s.value}-{m.name}" for s, m in PAIRS])
def test_check_every_pair(state: SessionState, message: MessageType) -> None:
    session = session_in(state)
    if message in ALLOWED[state]:
        session.check(message)
    else:
        with pytest.raises(ProtocolError) as caught:
            session.check(message)
        assert caught.value.code is ErrorCode.PROTOCOL_VIOLATION
        assert caught.value.closes
        assert message.name in caught.value.message
    assert session.state is state


@pytest.mark.parametrize(("state", "message"), PAIRS,
                         ids=[f"{s.value}-{m.name}" for s, m in PAIRS])
def test_advance_every_pair(state: SessionState, message: MessageType) -> None:
    session = session_in(state)
    session.advance(message, CONNECTED_AT + 5)
    assert session.state is TRANSITIONS.get((state, message), state)


@pytest.mark.parametrize("message", sorted(set(MessageType) - CLIENT_TYPES))
@pytest.mark.parametrize("state", list(SessionState))
def test_server_types_are_never_allowed(state: SessionState, message: MessageType) -> None:
    with pytest.raises(ProtocolError) as caught:
        session_in(state).check(message)
    assert caught.value.code is ErrorCode.PROTOCOL_VIOLATION


# -- transitions -------------------------------------------------------------------------------


def test_hello_then_register() -> None:
    session = Session(CONNECTED_AT)
    assert session.state is SessionState.ANONYMOUS
    session.check(MessageType.HELLO)
    session.advance(MessageType.HELLO, CONNECTED_AT + 40)
    assert session.state is SessionState.HELLOED
    assert session.helloed_at_ms == CONNECTED_AT + 40
    session.check(MessageType.REGISTER)
    session.advance(MessageType.REGISTER, CONNECTED_AT + 90)
    assert session.state is SessionState.WORKER
    session.check(MessageType.ENQUEUE)
    session.advance(MessageType.ENQUEUE, CONNECTED_AT + 100)
    assert session.state is SessionState.WORKER


def test_a_second_hello_is_a_violation() -> None:
    session = session_in(SessionState.HELLOED)
    with pytest.raises(ProtocolError) as caught:
        session.check(MessageType.HELLO)
    assert caught.value.code is ErrorCode.PROTOCOL_VIOLATION


def test_register_after_ident_makes_a_worker() -> None:
    session = session_in(SessionState.IDENTIFIED)
    session.check(MessageType.REGISTER)
    session.advance(MessageType.REGISTER, CONNECTED_AT + 1)
    assert session.state is SessionState.WORKER
    assert session.plan_timeout(CONNECTED_AT + 10**9, LIMITS) is SessionAction.NONE


# -- timeouts on a manual clock ------------------------------------------------------------------


def test_anonymous_is_closed_at_its_limit() -> None:
    session = Session(CONNECTED_AT)
    limit = LIMITS.unhelloed_max_lifetime_ms
    assert session.plan_timeout(CONNECTED_AT, LIMITS) is SessionAction.NONE
    assert session.plan_timeout(CONNECTED_AT + limit - 1, LIMITS) is SessionAction.NONE
    assert session.plan_timeout(CONNECTED_AT + limit, LIMITS) is SessionAction.CLOSE
    assert session.plan_timeout(CONNECTED_AT + limit + 1, LIMITS) is SessionAction.CLOSE
    assert session.state is SessionState.ANONYMOUS


def test_helloed_is_sent_ident_at_its_limit_counted_from_hello() -> None:
    helloed_at = CONNECTED_AT + 5_000
    session = Session(CONNECTED_AT)
    session.advance(MessageType.HELLO, helloed_at)
    limit = LIMITS.helloed_unregistered_max_lifetime_ms
    # Past the anonymous limit but HELLO was sent: the anonymous limit no longer applies.
    after_unhelloed = CONNECTED_AT + LIMITS.unhelloed_max_lifetime_ms
    assert session.plan_timeout(after_unhelloed, LIMITS) is SessionAction.NONE
    assert session.plan_timeout(helloed_at + limit - 1, LIMITS) is SessionAction.NONE
    assert session.plan_timeout(helloed_at + limit, LIMITS) is SessionAction.SEND_IDENT
    assert session.state is SessionState.HELLOED


def test_identify_sets_the_deadline() -> None:
    session = session_in(SessionState.HELLOED)
    now = CONNECTED_AT + LIMITS.helloed_unregistered_max_lifetime_ms
    deadline = session.identify(now, LIMITS)
    assert deadline == now + LIMITS.ident_register_timeout_ms
    assert session.ident_deadline_ms == deadline
    assert session.state is SessionState.IDENTIFIED


def test_identified_gets_register_timeout_at_the_deadline() -> None:
    session = session_in(SessionState.HELLOED)
    now = CONNECTED_AT + LIMITS.helloed_unregistered_max_lifetime_ms
    assert session.plan_timeout(now, LIMITS) is SessionAction.SEND_IDENT
    deadline = session.identify(now, LIMITS)
    # IDENT is not sent twice: the helloed limit stays passed, the session waits.
    assert session.plan_timeout(now, LIMITS) is SessionAction.NONE
    assert session.plan_timeout(deadline - 1, LIMITS) is SessionAction.NONE
    assert session.plan_timeout(deadline, LIMITS) is SessionAction.REGISTER_TIMEOUT
    assert session.plan_timeout(deadline + 1, LIMITS) is SessionAction.REGISTER_TIMEOUT


def test_worker_never_times_out() -> None:
    session = session_in(SessionState.WORKER)
    for later in (0, LIMITS.unhelloed_max_lifetime_ms, LIMITS.helloed_unregistered_max_lifetime_ms,
                  10**12):
        assert session.plan_timeout(CONNECTED_AT + later, LIMITS) is SessionAction.NONE


# -- random lifetimes ----------------------------------------------------------------------------

MESSAGES = st.one_of(
    st.sampled_from([MessageType.HELLO, MessageType.REGISTER]),
    st.sampled_from(CLIENT_MESSAGES),
)
STEPS = st.lists(
    st.tuples(MESSAGES, st.integers(min_value=0, max_value=12_000)), max_size=30
)


def expected_action(state: SessionState, now: int, connected_at: int, helloed_at: int,
                    deadline: int) -> SessionAction:
    """The timeout rules, written out independently of Session.plan_timeout."""
    anonymous_until = connected_at + LIMITS.unhelloed_max_lifetime_ms
    helloed_until = helloed_at + LIMITS.helloed_unregistered_max_lifetime_ms
    if state is SessionState.ANONYMOUS and now >= anonymous_until:
        return SessionAction.CLOSE
    waiting_for_auth = (SessionState.AUTHENTICATING, SessionState.CHALLENGED)
    if state in waiting_for_auth and now >= helloed_until:
        return SessionAction.CLOSE
    if state in (SessionState.HELLOED, SessionState.AUTHENTICATED) and now >= helloed_until:
        return SessionAction.SEND_IDENT
    if state is SessionState.IDENTIFIED and now >= deadline:
        return SessionAction.REGISTER_TIMEOUT
    return SessionAction.NONE


@settings(max_examples=300, deadline=None)
@given(steps=STEPS)
def test_random_lifetimes_follow_the_tables(steps: list[tuple[MessageType, int]]) -> None:
    """Time passes (heartbeat: plan, then IDENT or close), then a message arrives."""
    now = CONNECTED_AT
    session = Session(now)
    state = SessionState.ANONYMOUS
    helloed_at = deadline = 0
    for message, step in steps:
        now += step
        action = session.plan_timeout(now, LIMITS)
        assert action is expected_action(state, now, CONNECTED_AT, helloed_at, deadline)
        if action in (SessionAction.CLOSE, SessionAction.REGISTER_TIMEOUT):
            return
        if action is SessionAction.SEND_IDENT:
            deadline = session.identify(now, LIMITS)
            assert deadline == now + LIMITS.ident_register_timeout_ms
            state = SessionState.IDENTIFIED
        if message in ALLOWED[state]:
            session.check(message)
            session.advance(message, now)
            new_state = TRANSITIONS.get((state, message), state)
            if new_state is SessionState.HELLOED:
                helloed_at = now
            state = new_state
        else:
            with pytest.raises(ProtocolError) as caught:
                session.check(message)
            assert caught.value.code is ErrorCode.PROTOCOL_VIOLATION
        assert session.state is state
