"""TLS on the listener: the server's `ssl.SSLContext` from `[server.tls]`, and re-reading
the certificate files without a restart (SIGUSR1).

TLS 1.2 at least. With `client_ca_file`, a client may present a certificate signed by
that CA (it is optional: clients without one log in with SCRAM); the subject's CN names
the user it logs in as (overhop/server/authentication.py).

The handshake runs before the connection exists for the rest of the server: a
`TlsAcceptor` takes the TCP connection, runs `loop.start_tls`, and only then hands the
TLS transport to a new `Connection`. A client that does not speak
TLS (a plaintext client on this port) or fails the handshake costs one log line,
`tls_handshake_failed` with the reason, and a closed socket; never a traceback. (A TLS client on a
plaintext port sends a ClientHello whose first four bytes read as a frame length of
about 369 MB: ERR `FRAME_TOO_LARGE`, closed, one `connection_closed_on_error` line.)

Reloading loads the new files into the live context: connections made afterwards use
them, connections already open keep theirs. Files that do not load leave the context as
it was, and say why in the log. A CA removed from `client_ca_file` stays trusted until a
restart (OpenSSL can add to a context's trust store, not take away).
"""

import asyncio
import ssl
from collections.abc import Callable
from typing import cast

from overhop.config.sections import TlsConfig
from overhop.logs import get_logger

log = get_logger("overhop.tls")
# A real client finishes its handshake in milliseconds; ten seconds covers a slow link
# while a peer that opens a socket and says nothing is dropped as fast as an unhelloed one.
HANDSHAKE_TIMEOUT_S = 10.0
# A ClientHello fits in one TLS record (16 KiB); more before the handshake is not TLS.
MAX_EARLY_BYTES = 65_536


class TlsError(Exception):
    """The TLS files cannot be used; str() is one line saying which and why."""


def _load(context: ssl.SSLContext, config: TlsConfig) -> None:
    try:
        context.load_cert_chain(config.cert_file, config.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"server.tls: cannot load {config.cert_file} with {config.key_file}: "
                       f"{exc.strerror or exc}") from None
    if config.client_ca_file:
        try:
            context.load_verify_locations(cafile=config.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"server.tls.client_ca_file: cannot load "
                           f"{config.client_ca_file}: {exc.strerror or exc}") from None


def server_context(config: TlsConfig) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_OPTIONAL if config.client_ca_file else ssl.CERT_NONE
    _load(context, config)
    return context


class ServerTls:
    """The listener's context and its reload."""

    def __init__(self, config: TlsConfig) -> None:
        self._config = config
        self.context = server_context(config)
        self.reloads = 0

    def acceptor(self, make_protocol: Callable[[], asyncio.Protocol]
                 ) -> Callable[[], asyncio.Protocol]:
        """The listener's protocol factory: each connection starts with the handshake."""
        return lambda: TlsAcceptor(self.context, make_protocol)


    def reload(self) -> None:
        try:
            server_context(self._config)  # the files must load on their own first
            _load(self.context, self._config)
        except TlsError as exc:
            log.error("tls_reload_failed", reason=str(exc))
            return
        self.reloads += 1
        log.info("tls_reloaded", cert_file=self._config.cert_file,
                 client_ca_file=self._config.client_ca_file or None)


def tls_for(config: TlsConfig) -> ServerTls | None:
    """The listener's TLS, or None for plain TCP (no cert_file)."""
    return ServerTls(config) if config.cert_file else None




class TlsAcceptor(asyncio.Protocol):
    """The protocol each connection of a TLS listener starts with: `loop.start_tls`, then
    the connection proper (`make_protocol()`) gets the TLS transport.

    Bytes that arrive before `start_tls` has put its protocol in place (a ClientHello
    often does: reading starts as soon as the connection is made) are kept here and
    handed to it first, before its handshake starts.
    """

    def __init__(self, context: ssl.SSLContext, make_protocol: Callable[[], asyncio.Protocol]
                 ) -> None:
        self._context = context
        self._make_protocol = make_protocol
        self._transport: asyncio.Transport | None = None
        self._early = bytearray()
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's: not a subclass
        self._task = asyncio.get_running_loop().create_task(self._handshake())

    def data_received(self, data: bytes) -> None:
        self._early += data
        if len(self._early) > MAX_EARLY_BYTES and self._transport is not None:
            self._transport.abort()

    def _hand_over_early_bytes(self) -> None:
        """Runs right after start_tls put its protocol in place, before its handshake."""
        assert self._transport is not None
        current = self._transport.get_protocol()
        if current is self:  # start_tls did not take over (the peer left): nothing to do
            return
        protocol = cast(asyncio.BufferedProtocol, current)
        data = memoryview(bytes(self._early))
        self._early.clear()
        while data:
            buffer = memoryview(protocol.get_buffer(len(data))).cast("B")
            size = min(len(buffer), len(data))
            buffer[:size] = data[:size]
            protocol.buffer_updated(size)
            data = data[size:]

    async def _handshake(self) -> None:
        transport = self._transport
        assert transport is not None
        protocol = self._make_protocol()
        peer = transport.get_extra_info("peername")
        loop = asyncio.get_running_loop()
        loop.call_soon(self._hand_over_early_bytes)  # after start_tls's first step
        try:
            tls_transport = await loop.start_tls(
                transport, protocol, self._context, server_side=True,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S)
        except (OSError, RuntimeError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            log.info("tls_handshake_failed", peer=str(peer[0]) if peer else "?",
                     reason=str(exc) or type(exc).__name__)
            transport.abort()
            return
        if tls_transport is None:
            transport.abort()
            return
        protocol.connection_made(tls_transport)

    def connection_lost(self, exc: Exception | None) -> None:
        """The peer left before start_tls took the connection over: nothing to do."""
