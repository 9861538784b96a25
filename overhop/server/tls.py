"""TLS on the listener: the server's `ssl.SSLContext` from `[server.tls]`, and re-reading
the certificate files without a restart (SIGUSR1).

TLS 1.2 at least. With `client_ca_file`, a client may present a certificate signed by
that CA (it is optional: clients without one log in with SCRAM); the subject's CN names
the user it logs in as (overhop/server/authentication.py).

Reloading loads the new files into the live context: connections made afterwards use
them, connections already open keep theirs. Files that do not load leave the context as
it was, and say why in the log. A CA removed from `client_ca_file` stays trusted until a
restart (OpenSSL can add to a context's trust store, not take away).
"""

import ssl

from overhop.config.schema import TlsConfig
from overhop.logs import get_logger

log = get_logger("overhop.tls")


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
