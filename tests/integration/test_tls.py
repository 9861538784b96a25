"""TLS on the listener, with certificates the test makes: SCRAM over TLS, a client
certificate that logs in as the user its CN names, the wrong protocol on either port
(a clean close and one log line), and certificates re-read on SIGUSR1."""

import asyncio
import signal
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from overhop_client import AsyncClient, AuthenticationError, ForbiddenError

from tests.support.auth import assert_no_secret_logged
from tests.support.certs import CertificateAuthority
from tests.support.server_process import ServerProcess

ALICE = ("alice", "alice-Tls-Pw-31")
ADMIN = ("root", "root-Tls-Pw-77")
# Bounds a wait for a log line the server writes within milliseconds.
EVENT_TIMEOUT_S = 10.0


class Pki:
    def __init__(self, directory: Path) -> None:
        self.ca = CertificateAuthority(directory)
        self.server = self.ca.issue("127.0.0.1", "server", server=True)
        self.alice = self.ca.issue("alice", "alice")
        self.stranger = self.ca.issue("nobody-known", "stranger")
        self.other_ca = CertificateAuthority(directory, "another CA")
        self.forged = self.other_ca.issue("alice", "forged-alice")

    def server_args(self, client_certificates: bool = True) -> list[str]:
        args = ["--server.tls.cert_file", str(self.server),
                "--server.tls.key_file", str(self.server.with_suffix(".key"))]
        if client_certificates:
            args += ["--server.tls.client_ca_file", str(self.ca.path)]
        return args

    def client(self, certificate: Path | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca.path))
        if certificate is not None:
            context.load_cert_chain(certificate, certificate.with_suffix(".key"))
        return context


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
def tls_server(start_server: Callable[..., ServerProcess], pki: Pki) -> ServerProcess:
    server = start_server(*pki.server_args())
    assert server.events("server_started")[0]["tls"] is True
    return server


def tls_url(server: ServerProcess, login: tuple[str, str] | None = None) -> str:
    userinfo = f"{login[0]}:{login[1]}@" if login else ""
    return f"overhops://{userinfo}127.0.0.1:{server.port}"


def wait_for_event(server: ServerProcess, name: str, count: int = 1) -> None:
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    while len(server.events(name)) < count:
        assert time.monotonic() < deadline, f"no {name} in the log"
        time.sleep(0.02)


async def make_users(server: ServerProcess, pki: Pki) -> None:
    context = pki.client()
    async with await AsyncClient.connect(tls_url(server), tls=context) as client:
        await client.add_user(*ADMIN, ["admin", "manage", "read"], iterations=4096)
    async with await AsyncClient.connect(tls_url(server, ADMIN), tls=context) as client:
        await client.add_user(*ALICE, ["produce:mail-*", "read:mail-*"], iterations=4096)
        await client.add_queue("mail-out")
        await client.add_queue("billing")


def test_scram_over_tls(tls_server: ServerProcess, pki: Pki) -> None:
    async def run() -> None:
        await make_users(tls_server, pki)
        async with await AsyncClient.connect(tls_url(tls_server, ALICE),
                                             tls=pki.client()) as alice:
            assert alice.user == "alice"
            await alice.enqueue("mail-out", {"n": 1})
    asyncio.run(run())
    assert_no_secret_logged(tls_server, [ALICE[1], ADMIN[1]])


def test_a_client_certificate_logs_in_as_its_cn(tls_server: ServerProcess, pki: Pki) -> None:
    async def run() -> None:
        await make_users(tls_server, pki)
        async with await AsyncClient.connect(tls_url(tls_server),
                                             tls=pki.client(pki.alice)) as alice:
            assert alice.user == "alice"  # no password given or asked
            await alice.enqueue("mail-out", {"n": 1})
            with pytest.raises(ForbiddenError):
                await alice.enqueue("billing", {"n": 1})
        # A certificate of the CA whose CN is no user: no login from it, SCRAM is asked.
        with pytest.raises(AuthenticationError):
            await AsyncClient.connect(tls_url(tls_server), tls=pki.client(pki.stranger))
        # Signed by another CA: the handshake fails.
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await AsyncClient.connect(tls_url(tls_server), tls=pki.client(pki.forged))
    asyncio.run(run())
    methods = [e["method"] for e in tls_server.events("authenticated")]
    assert "certificate" in methods
    assert tls_server.events("certificate_user_unknown")[0]["subject_cn"] == "nobody-known"
    wait_for_event(tls_server, "tls_handshake_failed")


def test_a_plaintext_client_on_the_tls_port(tls_server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=10) as sock:
        sock.sendall(bytes.fromhex("0000001084a17602a17401a3726964a131a17080"))  # HELLO
        assert sock.recv(100) == b""  # closed, nothing sent
    wait_for_event(tls_server, "tls_handshake_failed")
    assert len(tls_server.events("tls_handshake_failed")) == 1
    assert not any("Traceback" in line for line in tls_server.log_lines)


def test_a_tls_client_on_the_plaintext_port(server: ServerProcess, pki: Pki) -> None:
    async def run() -> None:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await AsyncClient.connect(tls_url(server), tls=pki.client(), timeout=10)
    asyncio.run(run())
    wait_for_event(server, "connection_closed_on_error")
    closed = server.events("connection_closed_on_error")
    assert len(closed) == 1 and closed[0]["code"] == "FRAME_TOO_LARGE"
    assert not any("Traceback" in line for line in server.log_lines)


def _served_cn(server: ServerProcess, pki: Pki) -> str:
    context = ssl.create_default_context(cafile=str(pki.ca.path))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        cert = tls.getpeercert()
    assert cert is not None
    return next(value for rdn in cert["subject"] for key, value in rdn if key == "commonName")


def test_sigusr1_rereads_the_certificate(start_server: Callable[..., ServerProcess],
                                         pki: Pki) -> None:
    server = start_server(*pki.server_args(client_certificates=False))
    assert _served_cn(server, pki) == "127.0.0.1"
    renewed = pki.ca.issue("localhost", "renewed", server=True)
    pki.server.write_bytes(renewed.read_bytes())
    pki.server.with_suffix(".key").write_bytes(renewed.with_suffix(".key").read_bytes())
    assert server.process is not None
    server.process.send_signal(signal.SIGUSR1)
    wait_for_event(server, "tls_reloaded")
    assert _served_cn(server, pki) == "localhost"
    # A broken file is refused; the certificate in use stays.
    pki.server.write_text("not a certificate")
    server.process.send_signal(signal.SIGUSR1)
    wait_for_event(server, "tls_reload_failed")
    assert _served_cn(server, pki) == "localhost"
    assert server.stop() == 0
