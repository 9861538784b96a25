"""A throwaway highly available PostgreSQL for the HA tests: 3 etcd members and 3 Patroni
nodes (each running the newest PostgreSQL in /usr/lib/postgresql, 15 here), all on
127.0.0.1 with free ports, data in one temporary directory, every process started and ended
by PID.

Debian's packages: `apt-get install etcd-server etcd-client patroni` (.ci/run does it). When
the tests run as root, everything runs as the `postgres` OS user (PostgreSQL refuses root),
started with `Popen(user=...)` so that the PID held is the program's own, not a wrapper's.

Patroni runs in synchronous mode (`synchronous_mode: true`): a COMMIT returns once a
standby has flushed it, so an acknowledged write survives the loss of the primary, and
Patroni promotes only that synchronous standby. Its timings are short so that a failover
takes seconds (ttl 10: the leader key lapses 10 s after the killed leader last renewed it;
loop_wait 1; retry_timeout 3, so a leader that cannot reach etcd demotes itself within
about 4 s). Patroni requires loop_wait + 2 * retry_timeout <= ttl.

`PatroniCluster.dsn(db)` is the multi-host DSN a broker uses: psycopg tries the three
servers in turn and keeps the one that takes writes (`target_session_attrs=read-write`).

Every wait is bounded and fails with what it waited for and the last state seen; the logs
of every process are in the temporary directory, and `describe()` sums them up.
"""

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# The newest PostgreSQL installed (Debian's postgresql-15 on this image).
BIN_DIR = max((p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "postgres").exists()),
              key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
              default=Path("/usr/lib/postgresql/15/bin"))
ETCD = "/usr/bin/etcd"
PATRONI = "/usr/bin/patroni"
SCOPE = "overhop-ha"
# Bounds on the waits (a loaded 2-core CI machine included): etcd forms its cluster in about
# a second; Patroni's first node runs initdb and the others copy it with pg_basebackup.
ETCD_START_TIMEOUT_S = 30.0
CLUSTER_START_TIMEOUT_S = 120.0
# A failover: the leader key's ttl (10 s) plus Patroni's loop and the promotion.
FAILOVER_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
POLL_S = 0.2  # between two looks at the cluster's state while waiting for it to change
HTTP_TIMEOUT_S = 1.0

TTL_S, LOOP_WAIT_S, RETRY_TIMEOUT_S = 10, 1, 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def missing() -> str | None:
    """What is not installed for this harness, or None."""
    for path in (ETCD, PATRONI, str(BIN_DIR / "postgres")):
        if not Path(path).exists():
            return (f"{path} is missing (apt-get install etcd-server etcd-client patroni "
                    "postgresql-15)")
    return None


def _http_status(url: str) -> tuple[int, bytes]:
    """The HTTP status and body of a GET (0 when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())
    except (OSError, TimeoutError):
        return 0, b""


def wait_until(what: str, check: Callable[[], bool], timeout_s: float,
               state: Callable[[], str] = lambda: "") -> float:
    """Poll `check` until true; the seconds it took. Fails the test naming `what` and the
    last `state()` when it does not come within `timeout_s`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"{what}: not within {timeout_s:.0f} s; {state()}")
        time.sleep(POLL_S)
    return time.monotonic() - started


@dataclass
class Member:
    """One etcd member."""

    name: str
    client_port: int
    peer_port: int
    data: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Node:
    """One Patroni node and the PostgreSQL it runs."""

    name: str
    pg_port: int
    api_port: int
    data: Path
    config: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None
    killed: bool = field(default=False)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def role(self) -> str:
        """What Patroni's REST API says: `primary`, `replica`, or `down`/`unknown`."""
        if not self.running:
            return "down"
        status, body = _http_status(f"{self.api}/patroni")
        if not status:
            return "unknown"
        try:
            info = json.loads(body)
        except ValueError:
            return "unknown"
        role = str(info.get("role", "unknown"))
        return role if info.get("state") == "running" else f"{role}:{info.get('state')}"

    def is_writable_primary(self) -> bool:
        """Patroni's `/primary` answers 200 only on the leader running as a primary."""
        return self.running and _http_status(f"{self.api}/primary")[0] == 200

    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data / "postmaster.pid").read_text().split()[0])
        return None


class PatroniCluster:
    def __init__(self, size: int = 3) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="overhop-ha-"))
        self._user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        self.members = [Member(f"e{i}", _free_port(), _free_port(), self.root / f"etcd{i}",
                               self.root / f"etcd{i}.log") for i in range(1, size + 1)]
        self.nodes = [Node(f"pg{i}", _free_port(), _free_port(), self.root / f"pg{i}",
                           self.root / f"pg{i}.yml", self.root / f"pg{i}.log")
                      for i in range(1, size + 1)]

    # -- start and stop ------------------------------------------------------------------

    def start(self) -> "PatroniCluster":
        if self._user is not None:
            os.chmod(self.root, 0o755)
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        try:
            for member in self.members:
                self.start_member(member)
            wait_until("etcd cluster healthy", self._etcd_healthy, ETCD_START_TIMEOUT_S,
                       self.describe)
            for node in self.nodes:
                self._write_config(node)
                self._start_node(node)
            wait_until("a primary and two streaming standbys, one synchronous",
                       self._settled, CLUSTER_START_TIMEOUT_S, self.describe)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """End every process this cluster started (Patroni stops its PostgreSQL), then
        whatever PostgreSQL a killed Patroni left, then etcd; remove the data."""
        for node in self.nodes:
            self._end(node.process, signal.SIGTERM)
        for node in self.nodes:
            pid = node.postmaster_pid()
            if pid is not None and _alive(pid):
                # Immediate shutdown (SIGQUIT) of a PostgreSQL whose Patroni was killed.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGQUIT)
                _wait_gone(pid)
        for member in self.members:
            self._end(member.process, signal.SIGTERM)
        shutil.rmtree(self.root, ignore_errors=True)

    def _spawn(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(self.root)}
        with open(log, "ab") as out:
            if self._user is None:
                return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env,
                                        cwd=self.root, start_new_session=True)
            return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    cwd=self.root, user=self._user.pw_uid,
                                    group=self._user.pw_gid, extra_groups=[],
                                    start_new_session=True)

    @staticmethod
    def _end(process: subprocess.Popen[bytes] | None, sig: int) -> None:
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)

    # -- etcd ----------------------------------------------------------------------------

    def start_member(self, member: Member) -> None:
        """Start (or start again, on its data) one etcd member."""
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        member.process = self._spawn([
            ETCD, "--name", member.name, "--data-dir", str(member.data),
            "--listen-client-urls", member.client_url,
            "--advertise-client-urls", member.client_url,
            "--listen-peer-urls", member.peer_url,
            "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster", initial, "--initial-cluster-state", "new",
            "--initial-cluster-token", SCOPE,
            # Loopback: a fast heartbeat and election, so losing a leader costs ~1 s.
            "--heartbeat-interval", "100", "--election-timeout", "1000"], member.log)

    def stop_member(self, member: Member) -> None:
        """SIGKILL one etcd member (as a crash or a partition would lose it)."""
        self._end(member.process, signal.SIGKILL)

    def _etcd_healthy(self) -> bool:
        return all(_http_status(f"{m.client_url}/health")[1].find(b'"true"') >= 0
                   for m in self.members if m.running)

    def etcd_hosts(self) -> str:
        return ",".join(f"127.0.0.1:{m.client_port}" for m in self.members)

    # -- Patroni -------------------------------------------------------------------------

    def _write_config(self, node: Node) -> None:
        # JSON is YAML: no YAML writer needed.
        config = {
            "scope": SCOPE,
            "name": node.name,
            "log": {"level": "INFO"},
            "restapi": {"listen": f"127.0.0.1:{node.api_port}",
                        "connect_address": f"127.0.0.1:{node.api_port}"},
            "etcd3": {"hosts": self.etcd_hosts()},
            "bootstrap": {
                "dcs": {
                    "ttl": TTL_S, "loop_wait": LOOP_WAIT_S, "retry_timeout": RETRY_TIMEOUT_S,
                    "maximum_lag_on_failover": 1 << 20,
                    "synchronous_mode": True,
                    "postgresql": {
                        "use_pg_rewind": True,
                        "parameters": {"max_connections": 100, "shared_buffers": "32MB",
                                       "wal_keep_size": "64MB", "max_wal_senders": 10,
                                       "max_replication_slots": 10, "hot_standby": "on"},
                    },
                },
                "initdb": [{"encoding": "UTF8"}, {"auth": "trust"}],
                "pg_hba": ["local all all trust",
                           "host replication all 127.0.0.1/32 trust",
                           "host all all 127.0.0.1/32 trust"],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{node.pg_port}",
                "connect_address": f"127.0.0.1:{node.pg_port}",
                "data_dir": str(node.data),
                "bin_dir": str(BIN_DIR),
                "pgpass": str(self.root / f"{node.name}.pgpass"),
                "authentication": {"replication": {"username": "postgres"},
                                   "superuser": {"username": "postgres"}},
                "parameters": {"unix_socket_directories": str(self.root)},
            },
            "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
        }
        node.config.write_text(json.dumps(config, indent=1))
        if self._user is not None:
            os.chown(node.config, self._user.pw_uid, self._user.pw_gid)

    def _start_node(self, node: Node) -> None:
        node.process = self._spawn([PATRONI, str(node.config)], node.log)
        node.killed = False

    def primary(self) -> Node | None:
        for node in self.nodes:
            if node.is_writable_primary():
                return node
        return None

    def wait_for_primary(self, timeout_s: float = FAILOVER_TIMEOUT_S,
                         other_than: Node | None = None) -> tuple[Node, float]:
        """A primary that takes writes (not `other_than`), and the seconds it took."""
        found: list[Node] = []

        def check() -> bool:
            node = self.primary()
            if node is None or node is other_than:
                return False
            found.append(node)
            return True

        took = wait_until("a primary", check, timeout_s, self.describe)
        return found[-1], took

    def _settled(self) -> bool:
        primary = self.primary()
        if primary is None:
            return False
        status, body = _http_status(f"{primary.api}/cluster")
        if status != 200:
            return False
        members = json.loads(body).get("members", [])
        streaming = [m for m in members if m.get("role") in ("replica", "sync_standby")
                     and m.get("state") in ("streaming", "running")]
        synchronous = [m for m in members if m.get("role") == "sync_standby"]
        return len(streaming) == len(self.nodes) - 1 and len(synchronous) == 1

    def kill_primary(self) -> Node:
        """SIGKILL the primary's Patroni, then its PostgreSQL (the postmaster: its backends
        end when they see it gone), as a machine's crash would; the node it was."""
        node = self.primary()
        if node is None:
            pytest.fail(f"no primary to kill; {self.describe()}")
        pid = node.postmaster_pid()
        self._end(node.process, signal.SIGKILL)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_gone(pid)
        node.killed = True
        return node

    def dsn(self, database: str, *, connect_timeout_s: int = 2) -> str:
        hosts = ",".join("127.0.0.1" for _ in self.nodes)
        ports = ",".join(str(node.pg_port) for node in self.nodes)
        return (f"host={hosts} port={ports} dbname={database} user=postgres "
                f"target_session_attrs=read-write connect_timeout={connect_timeout_s}")

    def new_database(self, name: str) -> str:
        """Create `name` on the primary; the multi-host DSN to it."""
        import psycopg
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def describe(self) -> str:
        """The state of every process, and the tail of each Patroni log, for a failure."""
        lines = [f"data in {self.root}"]
        for member in self.members:
            lines.append(f"etcd {member.name}: {'running' if member.running else 'stopped'}")
        for node in self.nodes:
            lines.append(f"patroni {node.name} (pg port {node.pg_port}): {node.role()}")
            with contextlib.suppress(OSError):
                tail = node.log.read_text(errors="replace").splitlines()[-4:]
                lines.extend(f"    {line}" for line in tail)
        return "\n".join(lines)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_gone(pid: int) -> None:
    """Wait for a process that is not our child (a postmaster under Patroni) to end."""
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _alive(pid) and not _is_zombie(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            return
        time.sleep(POLL_S / 4)


def _is_zombie(pid: int) -> bool:
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    return False


@pytest.fixture(scope="module")
def patroni_cluster() -> Iterator[PatroniCluster]:
    """A cluster for one test module; fails (not skips) when a package is missing: .ci/run
    installs them, and an HA test that silently skipped would prove nothing."""
    absent = missing()
    if absent is not None:
        pytest.fail(absent)
    cluster = PatroniCluster().start()
    yield cluster
    cluster.stop()
