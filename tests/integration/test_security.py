"""Users, SCRAM logins, permissions and the safe default, against a real server process
over TCP on 127.0.0.1. Every test ends by grepping the server's log for the passwords it
used: none may appear."""

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from overhop_client import AsyncClient, AuthFailedError

from overhop.auth.permissions import Verb
from overhop.server.authorization import RULES, QueueSource
from overhop.wire.messages import MessageType
from tests.support.auth import (
    HELLO,
    HI,
    REGISTER,
    USERPERMIT,
    add_users,
    assert_no_secret_logged,
    failed_login,
    scram_login,
    url_of,
)
from tests.support.raw_client import RawClient
from tests.support.server_process import ServerProcess

ADMIN = ("root", "root-Pa55word-7c1")
PASSWORDS = [ADMIN[1], "allowed-Pw-91f", "denied-Pw-2a7", "wrong-Guess-55", "alice-Pw-k9"]


@pytest.fixture
def secured(server: ServerProcess) -> Iterator[ServerProcess]:
    """The test's server with an admin user; afterwards, no password in its log."""
    asyncio.run(add_users(server, {ADMIN[0]: (ADMIN[1], ["admin", "manage", "read"])}))
    yield server
    assert_no_secret_logged(server, PASSWORDS)


def test_login_registers_and_proves_the_server(secured: ServerProcess) -> None:
    async def run() -> None:
        async with await AsyncClient.connect(url_of(secured, *ADMIN)) as client:
            assert client.user == ADMIN[0]
            assert [u["name"] for u in await client.users()] == [ADMIN[0]]
        raw = await scram_login(secured.port, *ADMIN)  # checks the server's signature
        await raw.close()
    asyncio.run(run())
    assert secured.events("authenticated")


def test_without_credentials_only_auth_is_allowed(secured: ServerProcess) -> None:
    async def run() -> None:
        client = await RawClient.connect(secured.port)
        hi = await client.request(HELLO)
        assert hi["t"] == HI and hi["p"] == {"mechanisms": ["SCRAM-SHA-256"]}
        reply = await client.request(REGISTER, {})
        assert reply["p"]["code"] == "PROTOCOL_VIOLATION"
        assert await client.read_frame() is None
    asyncio.run(run())


def test_wrong_password_and_unknown_user_look_the_same(secured: ServerProcess) -> None:
    async def run() -> list[tuple[dict[str, Any], dict[str, Any], float]]:
        return [await failed_login(secured.port, ADMIN[0], "wrong-Guess-55"),
                await failed_login(secured.port, "ghost", "wrong-Guess-55"),
                await failed_login(secured.port, "ghost", "wrong-Guess-55")]
    wrong, unknown, again = asyncio.run(run())

    def shape(challenge: dict[str, Any]) -> tuple[int, int, str]:
        fields = dict(part.split("=", 1) for part in challenge["data"].split(","))
        return len(fields["r"]), len(fields["s"]), fields["i"]

    assert shape(wrong[0]) == shape(unknown[0])
    salt = dict(p.split("=", 1) for p in unknown[0]["data"].split(","))["s"]
    assert salt == dict(p.split("=", 1) for p in again[0]["data"].split(","))["s"]
    for _, reply, _ in (wrong, unknown):
        assert reply["p"]["code"] == "AUTH_FAILED"
        assert reply["p"]["msg"] == "authentication failed"
        assert set(reply["p"]["details"]) == {"delay_ms"}
    failures = secured.events("authentication_failed")
    assert [f["user"] for f in failures] == [ADMIN[0], "ghost", "ghost"]
    assert all(f["peer"] == "127.0.0.1" for f in failures)


def test_failed_logins_from_one_address_are_slowed(start_server: Callable[..., ServerProcess]
                                                   ) -> None:
    server = start_server("--auth.failure_delay_ms", "40", "--auth.failure_delay_max_ms",
                          "400")
    asyncio.run(add_users(server, {ADMIN[0]: (ADMIN[1], ["admin"])}))

    async def run() -> list[tuple[int, float]]:
        tries = []
        for _ in range(6):  # bounded: 40+80+160+320+400+400 ms
            _, reply, took = await failed_login(server.port, ADMIN[0], "wrong-Guess-55")
            tries.append((reply["p"]["details"]["delay_ms"], took))
        return tries
    tries = asyncio.run(run())
    assert [delay for delay, _ in tries] == [40, 80, 160, 320, 400, 400]
    for delay, took in tries:
        assert took >= delay / 1000 * 0.9  # the reply really waited (never less)

    async def still_served() -> None:  # the delays never blocked the event loop
        async with await AsyncClient.connect(url_of(server, *ADMIN)) as client:
            await client.ping()
    asyncio.run(still_served())
    assert_no_secret_logged(server, PASSWORDS)


def test_a_removed_users_connections_are_closed(secured: ServerProcess) -> None:
    async def run() -> None:
        await add_users(secured, {"alice": ("alice-Pw-k9", ["read"])}, admin=ADMIN)
        alice = await scram_login(secured.port, "alice", "alice-Pw-k9")
        async with await AsyncClient.connect(url_of(secured, *ADMIN)) as admin:
            await admin.remove_user("alice")
            assert alice.writer.transport is not None
            assert await alice.read_frame() is None  # closed by the server
            with pytest.raises(AuthFailedError):
                await AsyncClient.connect(url_of(secured, "alice", "alice-Pw-k9"))
            await admin.ping()  # the remover's own connection stays
    asyncio.run(run())
    assert secured.events("connection_closed_user_removed")


def test_the_first_user_closes_open_connections(server: ServerProcess) -> None:
    async def run() -> None:
        bystander = await RawClient.connect(server.port)
        await bystander.register()
        await add_users(server, {ADMIN[0]: (ADMIN[1], ["admin"])})
        assert await bystander.read_frame() is None
        # The server's log is read by a thread of the test: give it a moment to catch up.
        for _ in range(200):
            if server.events("open_access_ended"):
                break
            await asyncio.sleep(0.05)
    asyncio.run(run())
    assert server.events("open_access_ended")


def test_permission_changes_apply_to_live_connections(secured: ServerProcess) -> None:
    async def run() -> None:
        await add_users(secured, {"alice": ("alice-Pw-k9", ["consume:jobs-*"])}, admin=ADMIN)
        async with await AsyncClient.connect(url_of(secured, *ADMIN)) as admin:
            await admin.add_queue("jobs-a")
            alice = await scram_login(secured.port, "alice", "alice-Pw-k9")
            sid = (await alice.ok(6, {"q": "jobs-a", "credits": 0}))["sid"]
            await admin.set_permissions("alice", ["read"])
            reply = await alice.request(8, {"sid": sid, "credits": 1})  # CREDIT
            assert reply["p"]["code"] == "FORBIDDEN"
            assert reply["p"]["details"] == {"verb": "consume", "queue": "jobs-a"}
            await alice.close()
    asyncio.run(run())


def test_listings_show_only_readable_queues(secured: ServerProcess) -> None:
    async def run() -> None:
        await add_users(secured, {"alice": ("alice-Pw-k9", ["read:team-*"])}, admin=ADMIN)
        async with await AsyncClient.connect(url_of(secured, *ADMIN)) as admin:
            for name in ("team-a", "team-b", "other"):
                await admin.add_queue(name)
        async with await AsyncClient.connect(url_of(secured, "alice", "alice-Pw-k9")) as alice:
            assert sorted(q.name for q in await alice.queues()) == ["team-a", "team-b"]
            assert sorted(q.info.name for q in (await alice.status()).queues) == [
                "team-a", "team-b"]
    asyncio.run(run())


def test_schedule_listings_show_only_schedules_of_readable_queues(secured: ServerProcess
                                                                  ) -> None:
    async def run() -> None:
        await add_users(secured, {"alice": ("alice-Pw-k9", ["read:team-*"])}, admin=ADMIN)
        async with await AsyncClient.connect(url_of(secured, *ADMIN)) as admin:
            for name in ("team-a", "other"):
                await admin.add_queue(name)
                await admin.add_schedule(f"s-{name}", name, "0 0 1 1 *")
        async with await AsyncClient.connect(url_of(secured, "alice", "alice-Pw-k9")) as alice:
            assert [s.name for s in await alice.schedules()] == ["s-team-a"]
    asyncio.run(run())


# -- the verb x allowed/denied matrix --------------------------------------------------

QUEUE = "perm-q"
# A schedule on QUEUE (its messages are checked on its queue) that never fires during the
# tests, so the job counts they compare stay put.
SCHEDULE = "perm-s"
YEARLY = "0 0 1 1 *"
JID = f"{QUEUE}:{uuid.UUID(int=1)}"
PAYLOADS: dict[MessageType, dict[str, Any]] = {
    MessageType.ENQUEUE: {"q": QUEUE},
    MessageType.ENQUEUEMANY: {"q": QUEUE, "jobs": [{}]},
    MessageType.SUBSCRIBE: {"q": QUEUE, "credits": 0},
    MessageType.ACK: {"jid": JID, "did": "x-1"},
    MessageType.JOBBEAT: {"jid": JID, "did": "x-1"},
    MessageType.JOBLOG: {"jid": JID, "did": "x-1", "lines": ["l"]},
    MessageType.COMPLETE: {"jid": JID, "did": "x-1"},
    MessageType.FAIL: {"jid": JID, "did": "x-1", "error": {"message": "m"}},
    MessageType.RELEASE: {"jid": JID, "did": "x-1"},
    MessageType.QUEUE: {"q": QUEUE},
    MessageType.JOB: {"jid": JID},
    MessageType.WATCH: {"jid": JID},
    MessageType.LSJOB: {"q": QUEUE, "status": "waiting"},
    MessageType.QSTATS: {"q": QUEUE},
    MessageType.LSQUEUE: {},
    MessageType.STATUS: {},
    MessageType.ADDQUEUE: {"name": "perm-new"},
    MessageType.SETQUEUE: {"q": QUEUE, "config": {"max_attempts": 2}},
    MessageType.PAUSE: {"q": QUEUE},
    MessageType.RESUME: {"q": QUEUE},
    MessageType.CLEARQUEUE: {"q": QUEUE},
    MessageType.RETRY: {"jid": JID},
    MessageType.RMJOB: {"jid": JID},
    MessageType.CANCEL: {"jid": JID},
    MessageType.BULK: {"q": QUEUE, "status": "failed", "action": "retry"},
    MessageType.RMQUEUE: {"q": QUEUE},
    MessageType.OBLITERATE: {"q": QUEUE},
    MessageType.USERADD: {"name": "someone"},  # refused as incomplete once allowed
    MessageType.USERLIST: {},
    MessageType.USERRM: {"name": "nobody"},
    MessageType.USERPERMIT: {"name": "nobody", "permissions": []},
    MessageType.WORKERCTL: {"worker": "nobody", "action": "quiet"},  # WORKER_NOT_FOUND once allowed
    MessageType.ADDSCHEDULE: {"name": "perm-s2", "q": QUEUE, "cron": YEARLY},
    MessageType.LSSCHEDULE: {},
    MessageType.RMSCHEDULE: {"name": SCHEDULE},
    MessageType.PAUSESCHEDULE: {"name": SCHEDULE},
    MessageType.RESUMESCHEDULE: {"name": SCHEDULE},
}
CHECKED = sorted(t for t, (verb, _) in RULES.items() if verb is not None
                 and t is not MessageType.CREDIT)  # CREDIT: the live-change test above


def test_the_matrix_covers_every_checked_message() -> None:
    assert set(PAYLOADS) == set(CHECKED)


@pytest.fixture(scope="module")
def matrix_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("matrix") / "data").start()
    users = {ADMIN[0]: (ADMIN[1], ["admin", "manage", "read"])}
    for verb in Verb:
        others = [f"{v}:*" for v in Verb if v is not verb]
        # Denied: every other verb everywhere, and this verb on other queues only.
        users[f"no-{verb}"] = ("denied-Pw-2a7", [*others, f"{verb}:other-*"])
        # A listing is filtered rather than refused while the user reads some queue.
        users[f"none-{verb}"] = ("denied-Pw-2a7", others)
        users[f"only-{verb}"] = ("allowed-Pw-91f", [f"{verb}:perm-*"])
        users[f"all-{verb}"] = ("allowed-Pw-91f", [f"{verb}:*"])
    asyncio.run(add_users(server, users))
    yield server
    server.stop()
    assert_no_secret_logged(server, PASSWORDS)


def _fresh_queue(server: ServerProcess) -> None:
    async def run() -> None:
        async with await AsyncClient.connect(url_of(server, *ADMIN)) as admin:
            if await admin.queue(QUEUE) is None:
                await admin.add_queue(QUEUE)
            elif (await admin.queue(QUEUE)).state.value == "paused":  # type: ignore[union-attr]
                await admin.resume(QUEUE)
            if SCHEDULE not in {s.name for s in await admin.schedules()}:
                await admin.add_schedule(SCHEDULE, QUEUE, YEARLY)
    asyncio.run(run())


@pytest.mark.parametrize("message", CHECKED, ids=[m.name for m in CHECKED])
def test_each_message_needs_its_verb(matrix_server: ServerProcess, message: MessageType
                                     ) -> None:
    verb, source = RULES[message]
    assert verb is not None
    _fresh_queue(matrix_server)
    denied_user = f"none-{verb}" if source is QueueSource.LISTING else f"no-{verb}"

    async def queue_state() -> tuple[Any, ...]:
        async with await AsyncClient.connect(url_of(matrix_server, *ADMIN)) as admin:
            stats = await admin.request(MessageType.QSTATS, {"q": QUEUE})
            return stats["state"], stats["stats"], len(await admin.queues())

    async def run() -> tuple[dict[str, Any], bool, dict[str, Any]]:
        before = await queue_state()
        denied = await scram_login(matrix_server.port, denied_user, "denied-Pw-2a7")
        refused = await denied.request(message, PAYLOADS[message])
        await denied.close()
        unchanged = await queue_state() == before
        allowed_user = (f"all-{verb}" if source in (QueueSource.NONE, QueueSource.WORKER)
                        else f"only-{verb}")
        allowed = await scram_login(matrix_server.port, allowed_user, "allowed-Pw-91f")
        accepted = await allowed.request(message, PAYLOADS[message])
        await allowed.close()
        return refused, unchanged, accepted

    refused, unchanged, accepted = asyncio.run(run())
    assert refused["t"] == 102 and refused["p"]["code"] == "FORBIDDEN", refused
    expected_queue = None if source in (QueueSource.NONE, QueueSource.LISTING,
                                        QueueSource.WORKER) else (
        "perm-new" if source is QueueSource.NAME else QUEUE)
    assert refused["p"]["details"] == {"verb": verb.value, "queue": expected_queue}
    assert verb.value in refused["p"]["msg"]
    assert unchanged  # the queue's state, its job counts and the queue list
    assert accepted["t"] == 101 or accepted["p"]["code"] != "FORBIDDEN", accepted
    forbidden = [e for e in matrix_server.events("request_forbidden")
                 if e["message"] == message.name]
    assert forbidden and forbidden[-1]["user"] == denied_user


# -- the safe default ------------------------------------------------------------------


def _serve(storage: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "overhop", "serve", "--server.port", "0",
         "--storage.path", str(storage), *args],
        capture_output=True, text=True, timeout=60, env={"HOME": str(storage.parent),
                                                         "PATH": "/usr/bin:/bin"})


def test_a_non_loopback_bind_without_users_is_refused(tmp_path: Path) -> None:
    result = _serve(tmp_path / "data", "--server.host", "0.0.0.0")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "overhop: refusing to listen on 0.0.0.0 without users"), result.stderr
    assert "server.allow_unauthenticated" in lines[0]


def test_allow_unauthenticated_serves_open_with_a_warning(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--server.host", "0.0.0.0", "--server.allow_unauthenticated", "true")
    assert server.events("unauthenticated_exposure")

    async def run() -> None:
        client = await RawClient.connect(server.port)
        await client.register()
        await client.close()
    asyncio.run(run())


def test_with_users_any_address_is_served_and_login_required(
        start_server: Callable[..., ServerProcess]) -> None:
    first = start_server()
    asyncio.run(add_users(first, {ADMIN[0]: (ADMIN[1], ["admin"])}))
    first.stop()
    server = start_server("--server.host", "0.0.0.0")

    async def run() -> None:
        client = await RawClient.connect(server.port)
        assert (await client.request(HELLO))["p"] == {"mechanisms": ["SCRAM-SHA-256"]}
        await client.close()
        logged_in = await scram_login(server.port, *ADMIN)
        await logged_in.close()
    asyncio.run(run())
    assert_no_secret_logged(server, PASSWORDS)


def test_userpermit_refuses_bad_permissions(secured: ServerProcess) -> None:
    async def run() -> None:
        admin = await scram_login(secured.port, *ADMIN)
        reply = await admin.request(USERPERMIT, {"name": ADMIN[0], "permissions": ["fly:*"]})
        assert reply["p"]["code"] == "INVALID_PAYLOAD"
        await admin.close()
    asyncio.run(run())


# -- the CLI ---------------------------------------------------------------------------


def _cli(home: Path, *args: str, stdin: str = "", password: str | None = None
         ) -> subprocess.CompletedProcess[str]:
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
    if password is not None:
        env["OVERHOP_PASSWORD"] = password
    return subprocess.run([sys.executable, "-m", "overhop", *args], input=stdin,
                          capture_output=True, text=True, timeout=60, env=env)


def test_the_users_commands(server: ServerProcess, tmp_path: Path) -> None:
    open_url = url_of(server)
    added = _cli(tmp_path, "users", "add", ADMIN[0], "--permit", "admin", "--permit", "read",
                 "--password-stdin", "--iterations", "4096", "--url", open_url,
                 stdin=ADMIN[1] + "\n")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == f"user {ADMIN[0]} added (admin:*, read:*)"
    admin_url = f"overhop://{ADMIN[0]}@127.0.0.1:{server.port}"  # password from the env
    added = _cli(tmp_path, "users", "add", "alice", "--password-stdin", "--iterations",
                 "4096", "--url", admin_url, stdin="alice-Pw-k9\n", password=ADMIN[1])
    assert added.returncode == 0, added.stderr
    permitted = _cli(tmp_path, "users", "permit", "alice", "produce:emails", "read",
                     "--url", admin_url, password=ADMIN[1])
    assert permitted.stdout.strip() == "user alice: produce:emails read:*", permitted.stderr
    revoked = _cli(tmp_path, "users", "permit", "alice", "read", "--revoke",
                   "--url", admin_url, password=ADMIN[1])
    assert revoked.stdout.strip() == "user alice: produce:emails"
    listed = _cli(tmp_path, "users", "list", "--json", "--url", admin_url, password=ADMIN[1])
    assert '"name": "alice"' in listed.stdout and "stored_key" not in listed.stdout
    wrong = _cli(tmp_path, "users", "list", "--url",
                 f"overhop://{ADMIN[0]}:wrong-Guess-55@127.0.0.1:{server.port}")
    assert wrong.returncode == 1
    assert wrong.stderr.strip() == "overhop: AUTH_FAILED: authentication failed"
    assert "wrong-Guess-55" not in wrong.stderr + wrong.stdout
    forbidden = _cli(tmp_path, "users", "list", "--url",
                     f"overhop://alice:alice-Pw-k9@127.0.0.1:{server.port}")
    assert forbidden.returncode == 1 and "FORBIDDEN" in forbidden.stderr
    removed = _cli(tmp_path, "users", "remove", "alice", "--url", admin_url, password=ADMIN[1])
    assert removed.stdout.strip() == "user alice removed"
    assert_no_secret_logged(server, PASSWORDS)


def test_a_login_not_finished_in_time_is_closed(start_server: Callable[..., ServerProcess]
                                                ) -> None:
    server = start_server("--wire.session.helloed_unregistered_max_lifetime_seconds", "1",
                          "--heartbeat.interval_ms", "100")
    asyncio.run(add_users(server, {ADMIN[0]: (ADMIN[1], ["admin"])}))

    async def run() -> None:
        client = await RawClient.connect(server.port)
        assert (await client.request(HELLO))["p"] == {"mechanisms": ["SCRAM-SHA-256"]}
        assert await client.read_frame(timeout=10) is None  # closed, nothing sent
    asyncio.run(run())
