"""Users: the record a server keeps of one, the name rule, and the fake record that makes
an unknown name cost and look the same as a wrong password."""

import hashlib
import hmac
import re
from collections import Counter
from dataclasses import dataclass

from overhop.auth.permissions import Permission
from overhop.auth.scram import KEY_BYTES, MAX_ITERATIONS, MIN_ITERATIONS, Credentials
from overhop.errors import ErrorCode, RequestError

# Letters, digits and `_ . @ -`: no `,` or `=` (SCRAM escapes them), nothing a log or a
# certificate subject would have to quote.
USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
SALT_BYTES = 16
# What a client that names no count uses (the SDK and CLI derive the keys): a few tens of
# milliseconds of PBKDF2 per login on the client, once per process (the SDK caches it).
DEFAULT_ITERATIONS = 100_000


@dataclass(frozen=True, slots=True)
class UserRecord:
    name: str
    credentials: Credentials
    permissions: frozenset[Permission]
    created_at_ms: int

    def with_permissions(self, permissions: frozenset[Permission]) -> "UserRecord":
        return UserRecord(self.name, self.credentials, permissions, self.created_at_ms)


def parse_user_name(value: object, field: str = "name") -> str:
    if type(value) is not str or not USER_NAME.fullmatch(value):
        raise RequestError(ErrorCode.INVALID_PAYLOAD,
                           f"'{field}' must be a user name: 1..64 letters, digits, _ . @ -, "
                           "starting with a letter or digit")
    return value


def parse_credentials(salt: object, iterations: object, stored_key: object,
                      server_key: object) -> Credentials:
    if type(salt) is not bytes or not 16 <= len(salt) <= 64:
        raise RequestError(ErrorCode.INVALID_PAYLOAD, "'salt' must be 16..64 bytes")
    if type(iterations) is not int or not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise RequestError(ErrorCode.INVALID_PAYLOAD,
                           f"'iterations' must be {MIN_ITERATIONS}..{MAX_ITERATIONS}")
    for name, key in (("stored_key", stored_key), ("server_key", server_key)):
        if type(key) is not bytes or len(key) != KEY_BYTES:
            raise RequestError(ErrorCode.INVALID_PAYLOAD, f"'{name}' must be {KEY_BYTES} bytes")
    return Credentials(salt, iterations, stored_key, server_key)  # type: ignore[arg-type]


def fake_credentials(secret: bytes, name: str, iterations: int) -> Credentials:
    """Credentials for a name that has no user: the same salt every time for the same name
    (derived from the server's secret), keys no password matches. A login as this name
    does the same work as a real one and fails the same way."""
    def derive(label: bytes, size: int) -> bytes:
        return hmac.new(secret, label + name.encode(), hashlib.sha256).digest()[:size]

    return Credentials(derive(b"salt\x00", SALT_BYTES), iterations,
                       derive(b"stored\x00", KEY_BYTES), derive(b"server\x00", KEY_BYTES))


def usual_iterations(users: list[UserRecord]) -> int:
    """The iteration count most users have: what an unknown name is given, so the count
    does not tell a real user from a made-up one."""
    if not users:
        return DEFAULT_ITERATIONS
    return Counter(u.credentials.iterations for u in users).most_common(1)[0][0]
