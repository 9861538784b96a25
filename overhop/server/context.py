"""The server's shared state, passed explicitly to handlers and loops (no globals)."""

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from overhop.broker.service import Broker
from overhop.config.schema import Config
from overhop.server.authentication import AuthService
from overhop.session.states import SessionLimits
from overhop.storage.reads import StoreReads
from overhop.storage.writer import Writer

if TYPE_CHECKING:
    from overhop.cluster.member import ClusterMember
    from overhop.server.connection import Connection


@dataclass(eq=False)
class ServerContext:
    config: Config
    reads: StoreReads
    writer: Writer
    broker: Broker
    session_limits: SessionLimits
    started_at_ms: int
    config_source: str
    pid: int = field(default_factory=os.getpid)
    connections: set["Connection"] = field(default_factory=set)
    shutting_down: bool = False
    connections_refused: int = 0
    # Received bytes not yet processed, summed over connections (`wire.max_buffered_input_bytes`).
    input_buffered_bytes: int = 0
    # The writer is lost: no connection is read from again (the server is on its way out).
    halted: bool = False
    # Requests of all connections waiting for their replies (commits): a connection adding
    # one while another connection's wait marks the writer shared (`shared_until`).
    requests_in_flight: int = 0
    # Loop time until which connections share the writer, and so take short turns
    # (connection.FRAMES_PER_TURN, SHARED_REQUESTS_IN_FLIGHT, SHARED_FOR_S).
    shared_until: float = 0.0
    # Cluster mode (docs/cluster.md): this broker among the others; None for a lone server.
    cluster: "ClusterMember | None" = None
    # Users, the secret, the login throttle; an open server (no users) until app.py sets it.
    auth: AuthService = field(default_factory=lambda: AuthService(Config(), [], b""))
