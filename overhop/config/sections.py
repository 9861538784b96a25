"""The configuration's sections: one frozen dataclass per TOML section, every key with its
default, its range and the reason for that default (`setting`).

`overhop.config.schema` assembles them into `Config` and owns what is valid.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOG_LEVELS = ("error", "warn", "info", "debug", "verbose")
STORAGE_ENGINES = ("lmdb", "postgres")
SELF_DEBUG_SUFFIX = "-self-debug"

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
TIB = 1024 * GIB


class ConfigError(Exception):
    """The configuration is unusable; str() is one line naming the offending key or file."""

    def __init__(self, message: str) -> None:
        # One line, always: the CLI prints it verbatim after "overhop: ".
        super().__init__(" ".join(message.split()))


def expand_home(path: str, environ: Mapping[str, str], *, key: str) -> str:
    """Replace a leading `~` / `~/` / `$HOME` / `$HOME/` with environ["HOME"]."""
    for prefix in ("~", "$HOME"):
        if path == prefix or path.startswith(prefix + "/"):
            home = environ.get("HOME", "")
            if not home:
                raise ConfigError(f"{key}: {path!r} starts with {prefix} but HOME is not set")
            return (home.rstrip("/") + path[len(prefix):]) or "/"
    return path


def setting(
    default: int | bool | str,
    *,
    doc: str,
    minimum: int | None = None,
    maximum: int | None = None,
    choices: tuple[str, ...] | None = None,
    nonempty: bool = False,
) -> Any:
    """A dataclass field for one config key, with its limits in the field metadata."""
    metadata = {"doc": doc, "min": minimum, "max": maximum, "choices": choices,
                "nonempty": nonempty}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class LoggingConfig:
    # info: lifecycle and error events only, nothing per message.
    level: str = setting("info", choices=LOG_LEVELS,
                         doc="Least severe level written; verbose is below debug.")
    # JSON lines by default: logs are meant for machines first.
    human_friendly: bool = setting(False, doc="Readable console lines instead of JSON lines.")


@dataclass(frozen=True)
class HeartbeatConfig:
    # Once a second is the coarsest tick that still expires leases and sessions promptly;
    # 100 ms is the floor because finer ticks only burn CPU on an idle broker.
    interval_ms: int = setting(
        1000, minimum=100, maximum=1000,
        doc="Period of the server's heartbeat tick, on which timed checks run.")


@dataclass(frozen=True)
class TlsConfig:
    # Empty: plain TCP. TLS is opt-in because a certificate cannot be made up for the
    # operator; docs/security.md says how to get one.
    cert_file: str = setting("", doc="PEM certificate chain; set with key_file to serve TLS. "
                                     "Re-read on SIGUSR1.")
    key_file: str = setting("", doc="PEM private key of cert_file.")
    # Empty: no client certificates asked for; SCRAM passwords only.
    client_ca_file: str = setting(
        "", doc="PEM CA bundle; a client certificate it signed logs in as the user named "
                "by the subject's CN.")


@dataclass(frozen=True)
class ServerConfig:
    # Loopback: a fresh server is reachable only from its own host until users exist
    # (docs/security.md); workers on other hosts need host = "0.0.0.0" and users.
    host: str = setting("127.0.0.1", nonempty=True, doc="Address to listen on.")
    # An unassigned port that does not clash with common services; 0 lets the OS pick.
    port: int = setting(9876, minimum=0, maximum=65535,
                        doc="TCP port to listen on; 0 picks a free port (for tests).")
    # Off: without users, only loopback is served. On, a server without users serves
    # anyone who reaches the port, with every right; a warning says so at each start.
    allow_unauthenticated: bool = setting(
        False, doc="Serve a non-loopback address without users (anyone may do anything).")
    # Ten thousand peers, each allowed up to write_buffer_high_bytes of queued output, is
    # the most one process can serve before memory, not sockets, becomes the limit.
    max_connections: int = setting(10000, minimum=1, maximum=1_000_000,
                                   doc="Connections beyond this are refused.")
    # 1 MiB holds many typical job pushes; a peer this far behind is slow, so the server
    # stops reading from it and pushing to it until it drains.
    write_buffer_high_bytes: int = setting(
        1 * MIB, minimum=4 * KIB, maximum=1 * GIB,
        doc="Per-peer output above which the server stops reading from and pushing to it.")
    # 64 MiB leaves room for several maximum-size envelopes above the high-water mark
    # (replies already produced); beyond it the peer is stuck and is dropped.
    write_buffer_max_bytes: int = setting(
        64 * MIB, minimum=64 * KIB, maximum=4 * GIB,
        doc="Per-peer output above which the peer is dropped; must exceed the high mark.")
    # Twice storage.max_batch_operations (1024): a producer that pipelines keeps one commit
    # filling while the previous one syncs, so the bound costs no throughput; each waiting
    # request holds about a kilobyte, so it also bounds what one peer pins (a few MiB).
    max_requests_in_flight: int = setting(
        2048, minimum=1, maximum=1_000_000,
        doc="Requests read from one connection whose replies are not sent yet (writes "
            "waiting for their commit); at this many the server stops reading it.")
    # 4 MiB of request frames waiting on their commit: several large jobs per connection,
    # while ten thousand connections cannot pin more than the payloads' own size would.
    # One request is always taken when none is waiting, whatever its size.
    max_request_bytes_in_flight: int = setting(
        4 * MIB, minimum=64 * KIB, maximum=1 * GIB,
        doc="Bytes of request frames from one connection whose replies are not sent yet; "
            "above this the server stops reading it.")
    # Idle workers send nothing, so only TCP notices a peer whose host died or whose network
    # went away: probed after 30 s of silence, it is dropped about a minute later (and
    # output left unacknowledged as long drops it too), freeing its credits.
    tcp_keepalive_seconds: int = setting(
        30, minimum=0, maximum=7200,
        doc="Seconds of silence before TCP probes a peer; unanswered, it is dropped about "
            "twice this long after it last answered. 0 turns the probes off.")
    tls: TlsConfig = field(default_factory=TlsConfig)


@dataclass(frozen=True)
class AuthConfig:
    # A quarter second costs a person nothing and a password guesser most of its speed;
    # it doubles with each failure from the same address.
    failure_delay_ms: int = setting(
        250, minimum=0, maximum=60_000,
        doc="Delay before the reply to a failed login; doubles per failure from one address.")
    # 30 s: a guesser gets two tries a minute from one address; a person who mistyped
    # waits at worst this long.
    failure_delay_max_ms: int = setting(30_000, minimum=0, maximum=3_600_000,
                                        doc="The failed-login delay never grows past this.")
    # Ten quiet minutes and an address starts again from the first delay.
    failure_memory_seconds: int = setting(
        600, minimum=1, maximum=86_400,
        doc="Seconds without a failure after which an address's count is forgotten.")


@dataclass(frozen=True)
class SessionConfig:
    # A real client sends HELLO at once; 10 s tolerates slow links and drops idle probes.
    unhelloed_max_lifetime_seconds: int = setting(
        10, minimum=1, maximum=3600,
        doc="Seconds a connection may live without sending HELLO.")
    # Same reasoning as above for the HELLO-to-REGISTER step.
    helloed_unregistered_max_lifetime_seconds: int = setting(
        10, minimum=1, maximum=3600,
        doc="Seconds a connection may live after HELLO without registering.")
    # The reply to IDENT is immediate in every client; 2 s covers a loaded network.
    ident_register_timeout_seconds: int = setting(
        2, minimum=1, maximum=3600,
        doc="Seconds a client has to send REGISTER after the server's IDENT.")


@dataclass(frozen=True)
class WireConfig:
    # 8 MiB fits large payloads while keeping one frame's memory bounded; payloads are
    # meant to be job descriptions, not bulk data.
    max_envelope_size_bytes: int = setting(
        8 * MIB, minimum=64 * KIB, maximum=32 * MIB,
        doc="Largest message envelope accepted or sent.")
    # 30 s lets a maximum-size frame arrive over a link of about 2.5 Mbit/s; a frame still
    # incomplete after that is a peer holding server memory, not a slow one.
    frame_timeout_ms: int = setting(
        30000, minimum=100, maximum=3_600_000,
        doc="A frame begun must be complete within this, or the connection is closed.")
    # 128 MiB: sixteen maximum-size frames arriving at once. Unbounded, 10,000 peers each
    # holding most of a frame could pin 80 GiB; over this, the peer holding the most is
    # closed. Must be at least twice the envelope limit, so one large frame always fits.
    max_buffered_input_bytes: int = setting(
        128 * MIB, minimum=1 * MIB, maximum=64 * GIB,
        doc="Received bytes not yet processed (partial frames) across all connections; "
            "above this the connection holding the most is closed.")
    session: SessionConfig = field(default_factory=SessionConfig)


@dataclass(frozen=True)
class QueuesConfig:
    # Every queue is in memory, and LSQUEUE's default page and STATUS list them all: 1000
    # keeps those replies well under 1 MiB and any dispatch pass short.
    max_queues: int = setting(1000, minimum=1, maximum=100_000,
                              doc="Most user queues; ADDQUEUE beyond it is refused.")


@dataclass(frozen=True)
class SchedulesConfig:
    # Every schedule is in memory and loaded at start, and LSSCHEDULE lists them: 1000
    # keeps boot's read and a full listing small, as many as the queues a server allows.
    max_schedules: int = setting(1000, minimum=1, maximum=100_000,
                                 doc="Most schedules; ADDSCHEDULE of a new one beyond it "
                                     "is refused.")


@dataclass(frozen=True)
class PaginationConfig:
    # 15 rows fit one terminal screen, the common case for interactive listing.
    page_size: int = setting(15, minimum=1, maximum=10000,
                             doc="Rows per page when a listing request names no size.")
    # 1000 rows bounds one reply's size and the time one read transaction is held.
    max_page_size: int = setting(1000, minimum=1, maximum=100_000,
                                 doc="Largest page a listing request may ask for.")
    # Skipping is a walk of the index on the event loop: 100,000 entries take tens of
    # milliseconds, a bound on how long one listing can hold every other connection up.
    max_skip: int = setting(100_000, minimum=0, maximum=100_000_000,
                            doc="Most jobs a listing page may skip to reach its start.")
    # A filtered page (LSJOB's `task`) reads and decodes each record it passes: about a
    # microsecond or two apiece, so 10,000 hold the loop for some milliseconds per page.
    max_filter_scan: int = setting(
        10_000, minimum=1, maximum=1_000_000,
        doc="Most jobs a filtered listing page reads before it returns where to go on.")


@dataclass(frozen=True)
class PostgresConfig:
    # No default database: a DSN names a server the operator runs, so it must be given.
    dsn: str = setting(
        "", doc='libpq connection string or URL (storage.engine = "postgres"); several '
                "hosts with target_session_attrs=read-write reach the writable one.")
    # 4 connections serve the reads of QSTATS, LSJOB, JOB and the pages on 2 cores without
    # queueing, and stay far below PostgreSQL's default max_connections (100).
    pool_size: int = setting(4, minimum=1, maximum=64,
                             doc="Connections the server process reads through.")


@dataclass(frozen=True)
class ClusterConfig:
    # Empty: one broker owns every queue (nothing of docs/cluster.md applies). Set, with
    # the postgres engine, this broker shares the database with others and owns the queues
    # given to it.
    node_id: str = setting(
        "", doc="This broker's name in a cluster (postgres engine); empty: no cluster.")
    # Empty: server.host:server.port, right when clients reach the broker at that address.
    advertise: str = setting(
        "", doc="host:port clients reach this broker at; empty: server.host:server.port.")
    # 10 s: a broker that stops (crash, pause, lost network) hands its queues over within
    # this, and a database failover (9-10 s measured with Patroni) does not move them.
    lease_ms: int = setting(10_000, minimum=500, maximum=600_000,
                            doc="How long a broker holds its queues without renewing.")
    # A fifth of the lease: four renewals may fail before a queue is lost.
    renew_ms: int = setting(2_000, minimum=100, maximum=60_000,
                            doc="How often a broker renews its queues and spreads them.")


@dataclass(frozen=True)
class StorageConfig:
    # LMDB: one machine, no other server to run. PostgreSQL: all state in a database the
    # operator runs (docs/storage.md), the first step past one machine.
    engine: str = setting("lmdb", choices=STORAGE_ENGINES,
                          doc="Storage engine: lmdb (a local directory) or postgres.")
    # A per-user location so a first run needs no privileges.
    path: str = setting("~/.overhop/data", nonempty=True,
                        doc="Data directory; a leading ~/ or $HOME/ is the home directory.")
    # Empty keeps the self-debug store next to the data, where operators look first.
    self_debug_path: str = setting(
        "", doc='Self-debug store directory; empty means storage.path + "-self-debug".')
    # Durability first: an acknowledged enqueue must survive a crash.
    sync: bool = setting(True, doc="fsync every commit.")
    # 64 MiB is small on disk and grows on demand, so a fresh broker costs little.
    initial_map_size_bytes: int = setting(
        64 * MIB, minimum=1 * MIB, maximum=1 * TIB,
        doc="LMDB map size at open; it grows as data grows.")
    # 64 GiB of address space is far below what 64-bit hosts allow and above any queue
    # a single broker should hold.
    max_map_size_bytes: int = setting(
        64 * GIB, minimum=1 * MIB, maximum=16 * TIB,
        doc="The map never grows past this; enqueues are refused near it.")
    # 8 MiB is enough for many completions and removals, which free space, to commit
    # after enqueues have been refused for lack of space.
    reserved_headroom_bytes: int = setting(
        8 * MIB, minimum=0, maximum=1 * GIB,
        doc="Space kept free so completing and removing jobs works when enqueues are refused.")
    # 1024 writes per commit amortises the fsync while keeping one commit's latency small.
    max_batch_operations: int = setting(1024, minimum=1, maximum=100_000,
                                        doc="Most write operations folded into one commit.")
    postgres: PostgresConfig = field(default_factory=PostgresConfig)

    def resolved_path(self, environ: Mapping[str, str] = os.environ) -> Path:
        """`path` with a leading `~/` or `$HOME/` replaced by the HOME directory."""
        return Path(expand_home(self.path, environ, key="storage.path"))

    def resolved_self_debug_path(self, environ: Mapping[str, str] = os.environ) -> Path:
        """`self_debug_path` expanded like `path`, or the data path + "-self-debug"."""
        if self.self_debug_path:
            return Path(expand_home(self.self_debug_path, environ, key="storage.self_debug_path"))
        data = expand_home(self.path, environ, key="storage.path").rstrip("/") or "/"
        return Path(data + SELF_DEBUG_SUFFIX)


@dataclass(frozen=True)
class DispatchConfig:
    # A worker acks on receipt; 10 s covers a GC pause or a busy event loop.
    ack_timeout_ms: int = setting(10000, minimum=100, maximum=3_600_000,
                                  doc="A pushed job not acked within this is offered again.")


@dataclass(frozen=True)
class JobsConfig:
    # Three tries rides out a transient failure without looping on a broken job.
    default_max_attempts: int = setting(3, minimum=1, maximum=1000,
                                        doc="Attempts for a job that names none.")
    # One second lets a transient cause clear before the retry.
    default_retry_interval_ms: int = setting(1000, minimum=1, maximum=86_400_000,
                                             doc="Delay before a failed job is retried.")
    # One minute suits short tasks; long ones extend their lease with JOBBEAT.
    default_lease_ms: int = setting(60000, minimum=100, maximum=86_400_000,
                                    doc="Time a worker holds a job without a JOBBEAT.")
    # 64 KiB holds a status document; bulk results belong in the worker's own storage.
    max_result_bytes: int = setting(64 * KIB, minimum=0, maximum=16 * MIB,
                                    doc="Largest result a job may store on completion.")
    # 25 entries show a failure pattern without letting a flapping job grow unbounded.
    max_error_history: int = setting(25, minimum=1, maximum=1000,
                                     doc="Attempt history entries kept per job; older ones "
                                         "are dropped.")
    # A thousand lines tell a job's story; more belongs in a log system.
    max_log_lines: int = setting(1000, minimum=0, maximum=100_000,
                                 doc="Log lines kept per job; the oldest are dropped.")
    # 64 KiB of log text per job keeps records small enough to read and copy quickly.
    max_log_bytes: int = setting(64 * KIB, minimum=0, maximum=16 * MIB,
                                 doc="Bytes of log text kept per job; the oldest lines are "
                                     "dropped.")
    # One log line longer than 4 KiB is a dump, not a line.
    max_log_line_bytes: int = setting(4 * KIB, minimum=16, maximum=1 * MIB,
                                      doc="Longest single log line accepted.")
    # 1000 jobs amortise a frame and a commit over many jobs while one batch's commit
    # still takes only milliseconds, so it does not hold other writes up.
    max_enqueue_batch: int = setting(1000, minimum=1, maximum=100_000,
                                     doc="Most jobs one ENQUEUEMANY may add.")


@dataclass(frozen=True)
class WorkerConfig:
    # 30 heartbeat periods at the 1 s default: a missed beat or two is not a death.
    stale_after_ms: int = setting(30000, minimum=1000, maximum=86_400_000,
                                  doc="A worker not heard from this long is considered gone.")


@dataclass(frozen=True)
class ShutdownConfig:
    # 5 s lets in-flight commits and replies finish without stalling a restart.
    grace_ms: int = setting(5000, minimum=0, maximum=600_000,
                            doc="Time given to connections to finish on shutdown.")


@dataclass(frozen=True)
class HttpConfig:
    # On by default: metrics, health and the dashboard are how an operator sees the broker,
    # and on loopback they are reachable only from the broker's own host.
    enabled: bool = setting(True, doc="Serve /metrics, /health, /ready and the dashboard.")
    # Loopback: the dashboard has actions and no users yet (see allow_non_loopback).
    host: str = setting("127.0.0.1", nonempty=True, doc="Address of the HTTP listener.")
    # The broker's port plus one, so both are easy to find; 0 lets the OS pick (tests).
    port: int = setting(9877, minimum=0, maximum=65535,
                        doc="HTTP port; 0 picks a free port (for tests).")
    # Until users and permissions exist, anyone who reaches the dashboard may act on it:
    # serving beyond loopback must be asked for by name.
    allow_non_loopback: bool = setting(
        False, doc="Allow a non-loopback http.host (no authentication: put a proxy with "
                   "auth in front).")
    # Off: the dashboard's actions are the point of having one on a private host.
    read_only: bool = setting(False, doc="Dashboard shows, never changes (actions refused).")
