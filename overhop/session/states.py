"""The connection lifecycle as data: states, allowed messages, transitions, timeouts.

anonymous --HELLO--> helloed --REGISTER--> worker
helloed --(unregistered too long: IDENT sent)--> identified --REGISTER--> worker
identified --(reply_deadline passed)--> ERR REGISTER_TIMEOUT, closed
anonymous --(no HELLO in time)--> closed without a reply
With authentication (overhop/server/authentication.py decides, right after HELLO):
helloed --(the server requires it)--> authenticating --AUTH--> challenged --AUTH--> authenticated
helloed --AUTH--> challenged (optional on an open server)
helloed --(a client certificate names a user)--> authenticated --REGISTER--> worker
authenticating, challenged --(not done in the helloed lifetime)--> closed without a reply
Any message a state does not allow: ERR PROTOCOL_VIOLATION, closed.
"""

from dataclasses import dataclass
from enum import Enum, StrEnum

from overhop.errors import ErrorCode, ProtocolError
from overhop.wire.messages import CLIENT_TYPES, MessageType


class SessionState(StrEnum):
    ANONYMOUS = "anonymous"
    HELLOED = "helloed"
    IDENTIFIED = "identified"
    AUTHENTICATING = "authenticating"
    CHALLENGED = "challenged"
    AUTHENTICATED = "authenticated"
    WORKER = "worker"


ALLOWED: dict[SessionState, frozenset[MessageType]] = {
    SessionState.ANONYMOUS: frozenset({MessageType.HELLO}),
    SessionState.HELLOED: frozenset({MessageType.REGISTER, MessageType.AUTH}),
    SessionState.IDENTIFIED: frozenset({MessageType.REGISTER}),
    SessionState.AUTHENTICATING: frozenset({MessageType.AUTH}),
    SessionState.CHALLENGED: frozenset({MessageType.AUTH}),
    SessionState.AUTHENTICATED: frozenset({MessageType.REGISTER}),
    SessionState.WORKER: CLIENT_TYPES - {MessageType.HELLO, MessageType.REGISTER,
                                         MessageType.AUTH},
}

TRANSITIONS: dict[tuple[SessionState, MessageType], SessionState] = {
    (SessionState.ANONYMOUS, MessageType.HELLO): SessionState.HELLOED,
    (SessionState.HELLOED, MessageType.REGISTER): SessionState.WORKER,
    (SessionState.IDENTIFIED, MessageType.REGISTER): SessionState.WORKER,
    (SessionState.HELLOED, MessageType.AUTH): SessionState.CHALLENGED,
    (SessionState.AUTHENTICATING, MessageType.AUTH): SessionState.CHALLENGED,
    (SessionState.CHALLENGED, MessageType.AUTH): SessionState.AUTHENTICATED,
    (SessionState.AUTHENTICATED, MessageType.REGISTER): SessionState.WORKER,
}

# States that wait for the client to finish authenticating: closed after the helloed
# lifetime, like a connection that never said HELLO.
AUTHENTICATION_STATES = frozenset({SessionState.AUTHENTICATING, SessionState.CHALLENGED})


class SessionAction(Enum):
    NONE = "none"
    CLOSE = "close"
    SEND_IDENT = "send_ident"
    REGISTER_TIMEOUT = "register_timeout"


@dataclass(frozen=True, slots=True)
class SessionLimits:
    unhelloed_max_lifetime_ms: int
    helloed_unregistered_max_lifetime_ms: int
    ident_register_timeout_ms: int


class Session:
    __slots__ = ("connected_at_ms", "helloed_at_ms", "ident_deadline_ms", "state")

    def __init__(self, now_ms: int) -> None:
        self.state = SessionState.ANONYMOUS
        self.connected_at_ms = now_ms
        self.helloed_at_ms = 0
        self.ident_deadline_ms = 0

    def check(self, message_type: MessageType) -> None:
        """Raise PROTOCOL_VIOLATION unless the current state allows the message."""
        if message_type not in ALLOWED[self.state]:
            raise ProtocolError(
                ErrorCode.PROTOCOL_VIOLATION,
                f"{message_type.name} is not allowed in state {self.state.value}",
            )

    def advance(self, message_type: MessageType, now_ms: int) -> None:
        new_state = TRANSITIONS.get((self.state, message_type))
        if new_state is None:
            return
        if new_state == SessionState.HELLOED:
            self.helloed_at_ms = now_ms
        self.state = new_state

    def plan_timeout(self, now_ms: int, limits: SessionLimits) -> SessionAction:
        """What the heartbeat must do with this connection now."""
        if self.state == SessionState.ANONYMOUS:
            if now_ms - self.connected_at_ms >= limits.unhelloed_max_lifetime_ms:
                return SessionAction.CLOSE
        elif self.state in AUTHENTICATION_STATES:
            if now_ms - self.helloed_at_ms >= limits.helloed_unregistered_max_lifetime_ms:
                return SessionAction.CLOSE
        elif self.state in (SessionState.HELLOED, SessionState.AUTHENTICATED):
            if now_ms - self.helloed_at_ms >= limits.helloed_unregistered_max_lifetime_ms:
                return SessionAction.SEND_IDENT
        elif self.state == SessionState.IDENTIFIED and now_ms >= self.ident_deadline_ms:
            return SessionAction.REGISTER_TIMEOUT
        return SessionAction.NONE

    def require_authentication(self) -> None:
        """Right after HELLO: the server accepts nothing but AUTH until it succeeds."""
        if self.state == SessionState.HELLOED:
            self.state = SessionState.AUTHENTICATING

    def authenticated_by_certificate(self) -> None:
        """Right after HELLO: the TLS client certificate named a user; REGISTER next."""
        if self.state == SessionState.HELLOED:
            self.state = SessionState.AUTHENTICATED

    def identify(self, now_ms: int, limits: SessionLimits) -> int:
        """IDENT was sent: REGISTER is due by the returned deadline."""
        self.state = SessionState.IDENTIFIED
        self.ident_deadline_ms = now_ms + limits.ident_register_timeout_ms
        return self.ident_deadline_ms
