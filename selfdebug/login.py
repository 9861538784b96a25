"""The self-debug walk's authentication: a bootstrap connection that adds the first user
over the open loopback server (which then closes it: open access has ended), the SCRAM
login of the main connection (the server's signature checked), and the user messages.

The password is made up for the run and never printed: AUTH carries SCRAM messages and
USERADD the derived keys, never the password itself.
"""

import secrets
from dataclasses import dataclass, field
from typing import Any

from overhop_client.auth import AuthenticationError, ScramClient, derive_credentials
from overhop_client.messages import MessageType

from selfdebug import checks
from selfdebug.steps import State, Step

MECHANISM = "SCRAM-SHA-256"
EVERY_VERB = ["produce", "consume", "read", "manage", "admin"]
SECOND_USER = "self-debug-reader"
# The floor RFC 7677 allows: self-debug's throwaway users need no slow hashing.
ITERATIONS = 4096


# Made up once per process, so every `Login()` of one run (the bootstrap's and the walk's,
# or a walk a caller built) agrees.
_RUN_PASSWORD = secrets.token_urlsafe(18)


@dataclass(frozen=True)
class Login:
    user: str = "self-debug"
    password: str = field(default=_RUN_PASSWORD, repr=False)


def _user_fields(name: str, password: str, permissions: list[str]) -> dict[str, Any]:
    keys = derive_credentials(password, ITERATIONS)
    return {"name": name, "salt": keys.salt, "iterations": keys.iterations,
            "stored_key": keys.stored_key, "server_key": keys.server_key,
            "permissions": permissions}


def _user(name: str, permissions: list[str]) -> Any:
    def check(state: State, p: dict[str, Any]) -> None:
        checks.equal(p.get("name"), name, "name")
        checks.equal(p.get("permissions"), permissions, "permissions")
        checks.time(p, "created_at")
        if "stored_key" in p or "server_key" in p:
            raise checks.Mismatch("a user record shows key material")
    return check


def bootstrap_walk(login: Login) -> list[Step]:
    """On the open server: the first user, after which the server closes the connection."""
    permissions = sorted(f"{verb}:*" for verb in EVERY_VERB)
    return [
        Step("HELLO (open server: no users yet)", MessageType.HELLO, MessageType.HI,
             "1 HELLO: HI {} from an open server", check=lambda s, p: checks.empty(p)),
        Step("REGISTER (unauthenticated, on loopback)", MessageType.REGISTER, MessageType.OK,
             "2 REGISTER: OK {wid, limits}"),
        Step("USERADD (the first user: open access ends)", MessageType.USERADD,
             MessageType.OK, "32 USERADD: OK user; every connection without a user closed",
             lambda state: _user_fields(login.user, login.password, EVERY_VERB),
             _user(login.user, permissions), then_closed=True),
    ]


def login_steps(login: Login) -> list[Step]:
    """HELLO and the two AUTH messages of a SCRAM-SHA-256 login."""

    def mechanisms(state: State, p: dict[str, Any]) -> None:
        checks.equal(p, {"mechanisms": [MECHANISM]}, "payload")

    def first(state: State) -> dict[str, Any]:
        state["scram"] = ScramClient(login.user, login.password)
        return {"mechanism": MECHANISM, "data": state["scram"].first()}

    def challenged(state: State, p: dict[str, Any]) -> None:
        state["server_first"] = checks.text(p, "data")

    def final(state: State) -> dict[str, Any]:
        return {"data": state["scram"].final(state["server_first"])}

    def proved(state: State, p: dict[str, Any]) -> None:
        checks.equal(p.get("user"), login.user, "user")
        try:
            state["scram"].verify(checks.text(p, "data"))
        except AuthenticationError as exc:
            raise checks.Mismatch(str(exc)) from None

    return [
        Step("HELLO (a login is required)", MessageType.HELLO, MessageType.HI,
             "1 HELLO: HI {mechanisms: [SCRAM-SHA-256]}", check=mechanisms),
        Step("AUTH (client-first)", MessageType.AUTH, MessageType.OK,
             "31 AUTH: OK {data: server-first}", first, challenged),
        Step("AUTH (client-final; the server's signature checked)", MessageType.AUTH,
             MessageType.OK, "31 AUTH: OK {data: server-final, user}", final, proved),
    ]


def user_steps(login: Login) -> list[Step]:
    """USERLIST, USERADD, USERPERMIT and USERRM of a second user."""

    def listed(state: State, p: dict[str, Any]) -> None:
        names = [user.get("name") for user in checks.field(p, "users")]
        checks.equal(names, [login.user], "users")

    return [
        Step("USERLIST", MessageType.USERLIST, MessageType.OK,
             "33 USERLIST: OK {users: [{name, permissions, iterations, created_at}]}",
             check=listed),
        Step("USERADD (a second user)", MessageType.USERADD, MessageType.OK,
             "32 USERADD: OK {name, permissions, iterations, created_at}",
             lambda state: _user_fields(SECOND_USER, secrets.token_urlsafe(18), ["read"]),
             _user(SECOND_USER, ["read:*"])),
        Step("USERPERMIT", MessageType.USERPERMIT, MessageType.OK,
             "35 USERPERMIT: OK user with the new permissions",
             lambda state: {"name": SECOND_USER, "permissions": ["read:self-debug*"]},
             _user(SECOND_USER, ["read:self-debug*"])),
        Step("USERRM", MessageType.USERRM, MessageType.OK, "34 USERRM: OK {}",
             lambda state: {"name": SECOND_USER}, lambda s, p: checks.empty(p)),
    ]
