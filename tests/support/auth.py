"""Helpers for authentication tests: users made over an open server, SCRAM logins with the
raw client, and the check that no password ever reached a log line."""

import asyncio
from collections.abc import Iterable

from overhop_client import AsyncClient
from overhop_client.connection import redact

from overhop.auth import scram
from tests.support.raw_client import RawClient
from tests.support.server_process import ServerProcess

HELLO, REGISTER, AUTH = 1, 2, 31
USERADD, USERLIST, USERRM, USERPERMIT = 32, 33, 34, 35
OK, ERR, HI = 101, 102, 103
# The floor: test logins cost the client a few milliseconds, not tens.
TEST_ITERATIONS = 4096


def url_of(server: ServerProcess, user: str | None = None, password: str | None = None,
           scheme: str = "overhop") -> str:
    login = f"{user}:{password}@" if user is not None else ""
    return f"{scheme}://{login}127.0.0.1:{server.port}"


async def add_users(server: ServerProcess, users: dict[str, tuple[str, Iterable[str]]],
                    admin: tuple[str, str] | None = None) -> None:
    """Create users {name: (password, permissions)}: over an unauthenticated loopback
    connection while the server has none (the first one closes it), else as `admin`."""
    pending = dict(users)
    while pending:
        url = url_of(server, *admin) if admin else url_of(server)
        async with await AsyncClient.connect(url) as client:
            for name in list(pending):
                password, permissions = pending.pop(name)
                await client.add_user(name, password, permissions, iterations=TEST_ITERATIONS)
                if admin is None:
                    break  # the first user ends open access: this connection is closed
        if admin is None and pending:
            first = next(iter(users))
            admin = (first, users[first][0])


async def scram_login(port: int, user: str, password: str, register: bool = True
                      ) -> RawClient:
    """A raw connection logged in as `user` (and registered, unless `register` is False)."""
    client = await RawClient.connect(port)
    hi = await client.request(HELLO)
    assert hi["t"] == HI and hi["p"]["mechanisms"] == ["SCRAM-SHA-256"], hi
    nonce = scram.new_nonce()
    first = scram.client_first_message(user, nonce)
    challenge = await client.ok(AUTH, {"mechanism": "SCRAM-SHA-256", "data": first})
    final, signature = scram.client_final_message(password, first, challenge["data"], nonce)
    outcome = await client.ok(AUTH, {"data": final})
    scram.verify_server_final(outcome["data"], signature)
    assert outcome["user"] == user
    if register:
        await client.ok(REGISTER, {})
    return client


async def failed_login(port: int, user: str, password: str
                       ) -> tuple[dict[str, object], dict[str, object], float]:
    """Try a login that fails: the server-first message, the ERR, and the seconds the ERR
    took to come after the client-final message."""
    client = await RawClient.connect(port)
    try:
        await client.request(HELLO)
        nonce = scram.new_nonce()
        first = scram.client_first_message(user, nonce)
        challenge = await client.ok(AUTH, {"mechanism": "SCRAM-SHA-256", "data": first})
        final, _ = scram.client_final_message(password, first, challenge["data"], nonce)
        started = asyncio.get_running_loop().time()
        reply = await client.request(AUTH, {"data": final})
        took = asyncio.get_running_loop().time() - started
        assert reply["t"] == ERR, reply
        assert await client.read_frame() is None  # and the server closed the connection
        return challenge, reply, took
    finally:
        await client.close()


def assert_no_secret_logged(server: ServerProcess, secrets: Iterable[str]) -> None:
    text = "".join(server.log_lines)
    for secret in secrets:
        assert secret not in text, f"{redact(secret)!r} appears in the server's log"
