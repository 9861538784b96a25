"""TCP keepalive on the server's side of every connection (`server.tcp_keepalive_seconds`):
the kernel's own timer table (/proc/net/tcp) shows whether the server's socket probes a
silent peer, and when the first probe is due."""

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.raw_client import frame
from tests.support.server_process import ServerProcess

KEEPALIVE_TIMER = 2  # /proc/net/tcp "tr" column: the keepalive timer is pending
USER_HZ = 100  # /proc/net/tcp reports timer expiries in clock ticks


def server_side_timer(server_port: int, client_port: int) -> tuple[int, float]:
    """(timer kind, seconds until it fires) of the server's socket for this connection."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        remote_port = int(fields[2].split(":")[1], 16)
        if (local_port, remote_port) == (server_port, client_port):
            kind, when = fields[5].split(":")
            return int(kind, 16), int(when, 16) / USER_HZ
    raise AssertionError(f"no server socket for 127.0.0.1:{client_port} in /proc/net/tcp")


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="Linux only")
@pytest.mark.parametrize(("args", "idle_s"), [
    ((), 30), (("--server.tcp_keepalive_seconds", "7"), 7),
    (("--server.tcp_keepalive_seconds", "0"), None)])
def test_server_probes_silent_peers(start_server: Callable[..., ServerProcess],
                                    args: tuple[str, ...], idle_s: int | None) -> None:
    server = start_server(*args)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as peer:
        # Once HELLO is answered, the server has taken the connection in.
        peer.sendall(frame({"v": 2, "t": 1, "rid": "1", "p": {}}))
        assert peer.recv(65536)
        kind, due_in = server_side_timer(server.port, peer.getsockname()[1])
        if idle_s is None:
            assert kind != KEEPALIVE_TIMER
        else:
            assert kind == KEEPALIVE_TIMER
            assert idle_s - 2 <= due_in <= idle_s, due_in
