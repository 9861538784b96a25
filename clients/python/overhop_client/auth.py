"""Logging in: SCRAM-SHA-256 on the client's side (RFC 5802, RFC 7677), and the keys a
server stores for a password (`derive_credentials`, used by `AsyncClient.add_user`).

The password never leaves this process: the server gets a proof, and proves in turn that
it knows the user's ServerKey (mutual authentication: `ServerSignatureError` otherwise).
PBKDF2 runs in a thread (it takes milliseconds) and its result is remembered for the
process, so a reconnecting worker pays it once. Only the GS2 header `n,,` is used: no
channel binding, no authorization identity.
"""

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

MECHANISM = "SCRAM-SHA-256"
MIN_ITERATIONS = 4096
MAX_ITERATIONS = 10_000_000
DEFAULT_ITERATIONS = 100_000
SALT_BYTES = 16
GS2_HEADER = "n,,"
CHANNEL_BINDING = base64.b64encode(GS2_HEADER.encode()).decode()
# A few (password, salt, iterations) a process logs in with; bounded all the same.
_CACHE_SIZE = 16
_salted_cache: dict[tuple[str, bytes, int], bytes] = {}


class AuthenticationError(ConnectionError):
    """Logging in went wrong on this side: the server's answer does not prove it knows the
    user (a wrong server, or someone in between), or the server wants a login this client
    was given no credentials for."""


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode(), validate=True)
    except (binascii.Error, ValueError):
        raise AuthenticationError("the server sent a SCRAM value that is not base64") from None


def salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    key = (password, salt, iterations)
    salted = _salted_cache.get(key)
    if salted is None:
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
        if len(_salted_cache) >= _CACHE_SIZE:
            _salted_cache.clear()
        _salted_cache[key] = salted
    return salted


@dataclass(frozen=True)
class StoredCredentials:
    """What a server keeps of a password (USERADD's fields)."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


def derive_credentials(password: str, iterations: int = DEFAULT_ITERATIONS,
                       salt: bytes | None = None) -> StoredCredentials:
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"iterations must be {MIN_ITERATIONS}..{MAX_ITERATIONS}")
    if not password:
        raise ValueError("the password must not be empty")
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return StoredCredentials(salt, iterations,
                             hashlib.sha256(_hmac(salted, b"Client Key")).digest(),
                             _hmac(salted, b"Server Key"))


class ScramClient:
    """One exchange: `first()`, then `final(server_first)` (PBKDF2: run it in a thread),
    then `verify(server_final)`."""

    def __init__(self, user: str, password: str, nonce: str | None = None) -> None:
        self.user = user
        self._password = password
        self._nonce = nonce if nonce is not None else _b64(secrets.token_bytes(18))
        self._first_bare = f"n={user.replace('=', '=3D').replace(',', '=2C')},r={self._nonce}"
        self._expected = b""

    def first(self) -> str:
        return GS2_HEADER + self._first_bare

    def final(self, server_first: str) -> str:
        parts = dict(part.split("=", 1) for part in server_first.split(",") if "=" in part)
        nonce, salt, iterations = parts.get("r", ""), parts.get("s", ""), parts.get("i", "")
        if not nonce.startswith(self._nonce) or len(nonce) == len(self._nonce):
            raise AuthenticationError("the server's nonce does not extend this client's")
        if not iterations.isdigit() or not MIN_ITERATIONS <= int(iterations) <= MAX_ITERATIONS:
            raise AuthenticationError(f"the server asks for {iterations!r} iterations")
        salted = salted_password(self._password, _unb64(salt), int(iterations))
        client_key = _hmac(salted, b"Client Key")
        without_proof = f"c={CHANNEL_BINDING},r={nonce}"
        message = f"{self._first_bare},{server_first},{without_proof}".encode()
        signature = _hmac(hashlib.sha256(client_key).digest(), message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self._expected = _hmac(_hmac(salted, b"Server Key"), message)
        return f"{without_proof},p={_b64(proof)}"

    def verify(self, server_final: str) -> None:
        if not server_final.startswith("v=") or not hmac.compare_digest(
                _unb64(server_final[2:]), self._expected):
            raise AuthenticationError(
                "the server's SCRAM signature is wrong: it does not know this user's keys "
                "(a wrong server, or someone in between)")
