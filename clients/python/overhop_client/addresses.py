"""The brokers a client is given: one address, or several for a cluster. Pure.

A client takes one URL (see `connection.parse_url`), a URL naming several hosts separated
by commas (`overhop://user:password@host1:9876,host2:9877`, `host1:9876,host2:9877`), or a
sequence of URLs. Every broker of a client shares one login and one TLS choice: a list
whose items disagree on them is refused, while an item without a login takes the one the
others carry. Each broker is then named `host:port` (`[v6]:port` for an IPv6 host), the
form the brokers of a cluster use in ROUTES, QUEUE_MOVED and SUBEND.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

from overhop_client.connection import Address, parse_url, redact


@dataclass(frozen=True)
class Brokers:
    """The addresses to try, in order, and what every connection to them shares."""

    addresses: tuple[str, ...]
    """Each broker as `host:port`, in the order given, without repeats."""
    tls: bool = False
    user: str | None = None
    password: str | None = field(default=None, repr=False)  # never shown

    @property
    def shown(self) -> str:
        """The addresses for messages: `host1:9876,host2:9877` (no login)."""
        return ",".join(self.addresses)


def host_port(host: str, port: int) -> str:
    """`host:port`, with brackets around an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_url(url: str) -> list[str]:
    """The URLs of each host a comma-separated URL names, each with its scheme and login:
    `overhop://u@h1:1,h2:2` is `overhop://u@h1:1` and `overhop://u@h2:2`."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    # A login may hold a comma; the hosts come after its last '@'.
    login, at, hosts = rest.rpartition("@")
    prefix = f"{scheme}{sep}{login}{at}"
    return [prefix + host for host in hosts.split(",")]


def parse_brokers(urls: str | Sequence[str]) -> Brokers:
    """The brokers `urls` names (see the module documentation); ValueError, never showing a
    password, when an address is malformed, the list is empty, or its items disagree on
    TLS or the login."""
    items = split_url(urls) if isinstance(urls, str) else [
        part for url in urls for part in split_url(url)]
    if not items:
        raise ValueError("no broker address given")
    parsed: list[Address] = []
    for item in items:
        if not item.strip() or item.endswith(("@", "://")):
            raise ValueError(f"an empty address in {redact_urls(urls)!r}")
        parsed.append(parse_url(item.strip()))
    if len({address.tls for address in parsed}) > 1:
        raise ValueError(f"the addresses {redact_urls(urls)!r} mix overhop:// and overhops://: "
                         "every broker of a client uses TLS, or none does")
    users = {address.user for address in parsed if address.user is not None}
    passwords = {address.password for address in parsed if address.password is not None}
    if len(users) > 1 or len(passwords) > 1:
        raise ValueError(f"the addresses {redact_urls(urls)!r} carry different logins: every "
                         "broker of a client is logged in to as the same user")
    named = dict.fromkeys(host_port(address.host, address.port) for address in parsed)
    return Brokers(tuple(named), parsed[0].tls, next(iter(users), None),
                   next(iter(passwords), None))


def redact_urls(urls: str | Sequence[str]) -> str:
    """The address(es) with every password replaced by `***`, for logs and messages."""
    return redact(urls) if isinstance(urls, str) else ",".join(redact(url) for url in urls)
