"""Where webhooks may post: the URL rules, the host allow-list and the address checks.

A webhook URL is ``http`` or ``https`` with a host and no credentials. Its host must be allowed
by ``QUARRY_WEBHOOK_HOSTS`` (see :class:`~app.modules.notifications.settings.NotificationsSettings`)
and every address it resolves to must be public, unless a network entry of that list covers it.
The check runs when a webhook is put and again before every attempt, which then connects to the
address it checked (so a name that resolves elsewhere in between reaches nothing unchecked).
"""

from __future__ import annotations

import asyncio
import fnmatch
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from app.kernel.settings import ConfigError
from contracts.common import InvalidInput

__all__ = ["Egress", "Target", "parse_url"]

RESOLVE_TIMEOUT_S = 5.0
"""The longest a host name may take to resolve."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (``address``) and what to call the host."""

    url: SplitResult
    host: str
    port: int
    address: str


def parse_url(url: str) -> SplitResult:
    """``url`` split, or ``InvalidInput`` unless it is an http(s) URL with a host and no
    credentials."""
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise _refused(url, "the URL holds spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise _refused(url, f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise _refused(url, "only http and https URLs are allowed")
    if not parts.hostname:
        raise _refused(url, "the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise _refused(url, "credentials in the URL are not allowed (use the signing secret)")
    return parts


class Egress:
    """The allow-list of ``QUARRY_WEBHOOK_HOSTS``, checking URLs and the addresses behind them."""

    def __init__(self, entries: tuple[str, ...]) -> None:
        self.names: list[str] = []
        self.networks: list[IPNetwork] = []
        for entry in (e.strip().lower() for e in entries):
            if not entry:
                continue
            if "/" in entry:
                try:
                    self.networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    raise ConfigError(
                        f"QUARRY_WEBHOOK_HOSTS: {entry!r} is not a network (e.g. 10.0.0.0/8)"
                    ) from None
            else:
                self.names.append(entry)

    async def check(self, url: str) -> Target:
        """``url`` checked: allowed scheme, host and addresses; ``InvalidInput`` otherwise.

        The host is allowed when a name entry matches it or network entries cover every address
        it resolves to; each address must also be public or covered by a network entry.
        """
        parts = parse_url(url)
        host = (parts.hostname or "").lower()
        port = parts.port or (443 if parts.scheme == "https" else 80)
        named = self._name_allowed(host)
        literal = _literal_address(host)
        if not named and literal is None and not self.networks:
            raise _refused(url, f"host {host!r} is not allowed by QUARRY_WEBHOOK_HOSTS")
        addresses = [literal] if literal is not None else await _resolve(url, host, port)
        for address in addresses:
            covered = self._covered(address)
            if not (named or covered):
                raise _refused(
                    url, f"host {host!r} ({address}) is not allowed by QUARRY_WEBHOOK_HOSTS"
                )
            if not (covered or _public(address)):
                raise _refused(
                    url,
                    f"{host} resolves to {address}, a {_kind(address)} address: allow its"
                    " network in QUARRY_WEBHOOK_HOSTS to post there",
                )
        return Target(url=parts, host=host, port=port, address=str(addresses[0]))

    def _name_allowed(self, host: str) -> bool:
        return any(fnmatch.fnmatchcase(host, name) for name in self.names)

    def _covered(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)


def _literal_address(host: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


async def _resolve(url: str, host: str, port: int) -> list[IPAddress]:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise _refused(
            url, f"host {host!r} did not resolve within {RESOLVE_TIMEOUT_S:g} s"
        ) from None
    except (OSError, UnicodeError, ValueError) as exc:
        raise _refused(url, f"host {host!r} does not resolve ({exc})") from None
    found: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address not in found:
            found.append(address)
    if not found:
        raise _refused(url, f"host {host!r} does not resolve")
    return found


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one stands for (6to4, NAT64), else the address itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def _public(address: IPAddress) -> bool:
    """Whether ``address`` (or the IPv4 address it stands for) is a public unicast one."""
    inner = _embedded(address)
    return inner.is_global and not (inner.is_multicast or inner.is_reserved or inner.is_unspecified)


def _kind(address: IPAddress) -> str:
    address = _embedded(address)
    for kind, test in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("unspecified", address.is_unspecified),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
    ):
        if test:
            return kind
    return "reserved"


def _refused(url: str, why: str) -> InvalidInput:
    return InvalidInput(f"webhook URL refused: {why}", details={"field": "url", "url": url[:500]})
