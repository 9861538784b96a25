"""SCRAM-SHA-256 (RFC 5802 with RFC 7677's hash), both sides, pure: strings in, strings out.

What the server stores per user is the salt, the iteration count, StoredKey and ServerKey
(`derive_credentials`); neither gives back the password nor lets anyone log in (StoredKey
is a hash of ClientKey, which the proof needs). The server verifies a proof with two HMACs
and a SHA-256; only the client runs PBKDF2.

    client-first  n,,n=<user>,r=<client nonce>
    server-first  r=<client nonce><server nonce>,s=<base64 salt>,i=<iterations>
    client-final  c=biws,r=<nonce>,p=<base64 ClientProof>
    server-final  v=<base64 ServerSignature>

Only the GS2 header `n,,` is accepted (no channel binding, no authzid): a client asking
for channel binding (`p=`) or saying it could have used it (`y,,`) is refused, as are
mandatory extensions (`m=`). Passwords are used as their UTF-8 bytes (no SASLprep).
`tests/unit/test_scram.py` reproduces RFC 7677's example exactly (protocol/vectors/scram.json).
"""

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

MECHANISM = "SCRAM-SHA-256"
# RFC 7677 section 4: at least 4096 iterations.
MIN_ITERATIONS = 4096
# Above this one login would cost a client seconds of CPU: a mistake, not more safety.
MAX_ITERATIONS = 10_000_000
GS2_HEADER = "n,,"
CHANNEL_BINDING = base64.b64encode(GS2_HEADER.encode()).decode()  # "biws"
KEY_BYTES = 32
# 18 random bytes: 144 bits, 24 base64 characters, none of them a comma.
NONCE_BYTES = 18
# A nonce or a user name longer than this is not a client's mistake but an attack.
MAX_FIELD_CHARS = 256


class ScramError(Exception):
    """A SCRAM message that does not parse or does not belong to this exchange."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a server keeps of a password."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode(), validate=True)
    except (binascii.Error, ValueError):
        raise ScramError(f"{what} is not base64") from None


def salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)


def client_key(salted: bytes) -> bytes:
    return _hmac(salted, b"Client Key")


def derive_credentials(password: str, salt: bytes, iterations: int) -> Credentials:
    """Salt, count, StoredKey and ServerKey for a password (PBKDF2: milliseconds of CPU)."""
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"iterations must be {MIN_ITERATIONS}..{MAX_ITERATIONS}")
    salted = salted_password(password, salt, iterations)
    return Credentials(salt, iterations, hashlib.sha256(client_key(salted)).digest(),
                       _hmac(salted, b"Server Key"))


def new_nonce() -> str:
    return b64(secrets.token_bytes(NONCE_BYTES))


def escape_name(name: str) -> str:
    """RFC 5802 saslname: ',' and '=' escaped."""
    return name.replace("=", "=3D").replace(",", "=2C")


def unescape_name(text: str) -> str:
    if "," in text:
        raise ScramError("a user name holds an unescaped ','")
    parts = text.split("=")
    out = [parts[0]]
    for part in parts[1:]:
        if part.startswith("2C"):
            out.append("," + part[2:])
        elif part.startswith("3D"):
            out.append("=" + part[2:])
        else:
            raise ScramError("a user name holds a bad '=' escape")
    return "".join(out)


def _attributes(text: str, names: str) -> list[str]:
    """The values of `text`'s comma-separated `x=value` attributes, which must be exactly
    the letters of `names` in that order (extensions after them are ignored unless they
    are mandatory, `m=`)."""
    parts = text.split(",")
    if len(parts) < len(names):
        raise ScramError(f"expected attributes {', '.join(names)}")
    values = []
    for name, part in zip(names, parts, strict=False):
        if not part.startswith(name + "="):
            raise ScramError(f"expected attribute {name!r}")
        values.append(part[2:])
    for extra in parts[len(names):]:
        if extra.startswith("m="):
            raise ScramError("mandatory extensions are not supported")
    return values


def _nonce(value: str) -> str:
    if not value or len(value) > 2 * MAX_FIELD_CHARS or not value.isprintable():
        raise ScramError("the nonce is empty, too long or not printable")
    return value


# -- the server's side --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientFirst:
    user: str
    nonce: str
    bare: str  # the message without the GS2 header: part of the AuthMessage


def parse_client_first(text: str) -> ClientFirst:
    if len(text) > 4 * MAX_FIELD_CHARS:
        raise ScramError("client-first-message too long")
    if text.startswith(("p=", "y,")):
        raise ScramError("channel binding is not supported: send the GS2 header 'n,,'")
    if not text.startswith(GS2_HEADER):
        raise ScramError("expected the GS2 header 'n,,' (no authzid)")
    bare = text[len(GS2_HEADER):]
    user, nonce = _attributes(bare, "nr")
    if not user or len(user) > MAX_FIELD_CHARS:
        raise ScramError("the user name is empty or too long")
    return ClientFirst(unescape_name(user), _nonce(nonce), bare)


def server_first_message(nonce: str, salt: bytes, iterations: int) -> str:
    """`nonce` is the client's nonce followed by the server's."""
    return f"r={nonce},s={b64(salt)},i={iterations}"


@dataclass(frozen=True, slots=True)
class ClientFinal:
    nonce: str
    proof: bytes
    without_proof: str


def parse_client_final(text: str) -> ClientFinal:
    if len(text) > 4 * MAX_FIELD_CHARS:
        raise ScramError("client-final-message too long")
    binding, nonce = _attributes(text, "cr")
    if binding != CHANNEL_BINDING:
        raise ScramError("channel binding must be 'biws' (none)")
    head, sep, proof = text.rpartition(",p=")
    if not sep or "," in proof:
        raise ScramError("the proof must be the last attribute")
    return ClientFinal(_nonce(nonce), unb64(proof, "the proof"), head)


def auth_message(client_first_bare: str, server_first: str, client_final_without_proof: str
                 ) -> bytes:
    return f"{client_first_bare},{server_first},{client_final_without_proof}".encode()


def verify_proof(stored_key: bytes, message: bytes, proof: bytes) -> bool:
    """Whether `proof` shows knowledge of the password behind `stored_key`. The same work
    and a constant-time comparison whatever the outcome."""
    signature = _hmac(stored_key, message)
    if len(proof) != len(signature):
        proof = bytes(len(signature))  # still do the work below, then fail
        valid_length = False
    else:
        valid_length = True
    recovered = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
    matches = hmac.compare_digest(hashlib.sha256(recovered).digest(), stored_key)
    return matches and valid_length


def server_final_message(server_key: bytes, message: bytes) -> str:
    return f"v={b64(_hmac(server_key, message))}"


# -- the client's side (the SDK has its own copy; this one serves tests and tools) --------


def client_first_message(user: str, nonce: str) -> str:
    return f"{GS2_HEADER}n={escape_name(user)},r={nonce}"


def parse_server_first(text: str, client_nonce: str) -> tuple[str, bytes, int]:
    """(combined nonce, salt, iterations); the nonce must extend the client's."""
    nonce, salt, iterations = _attributes(text, "rsi")
    if not nonce.startswith(client_nonce) or len(nonce) == len(client_nonce):
        raise ScramError("the server's nonce does not extend the client's")
    if not iterations.isdigit() or not MIN_ITERATIONS <= int(iterations) <= MAX_ITERATIONS:
        raise ScramError(f"iteration count {iterations!r} out of range")
    return _nonce(nonce), unb64(salt, "the salt"), int(iterations)


def client_final_message(password: str, client_first: str, server_first: str,
                         client_nonce: str) -> tuple[str, bytes]:
    """The client-final-message and the server signature to expect in server-final."""
    nonce, salt, iterations = parse_server_first(server_first, client_nonce)
    salted = salted_password(password, salt, iterations)
    key = client_key(salted)
    without_proof = f"c={CHANNEL_BINDING},r={nonce}"
    message = auth_message(client_first[len(GS2_HEADER):], server_first, without_proof)
    signature = _hmac(hashlib.sha256(key).digest(), message)
    proof = bytes(a ^ b for a, b in zip(key, signature, strict=True))
    return f"{without_proof},p={b64(proof)}", _hmac(_hmac(salted, b"Server Key"), message)


def verify_server_final(text: str, expected_signature: bytes) -> None:
    """Raise ScramError unless the server proved it knows the user's ServerKey."""
    if text.startswith("e="):
        raise ScramError(f"the server refused: {text[2:]}")
    (signature,) = _attributes(text, "v")
    if not hmac.compare_digest(unb64(signature, "the server signature"), expected_signature):
        raise ScramError("the server's signature is wrong: it does not know this user")
