"""The listening socket of ``quarry serve`` and ``quarry quickstart``, bound before any work.

Binding first turns a busy port into one line before the platform starts (and before the HTTP
server could log its own error); the bound socket is then handed to the server, so nothing can
take the port in between.
"""

from __future__ import annotations

import errno
import socket

__all__ = ["BACKLOG", "CannotListen", "listen"]

BACKLOG = 2048
"""Connections the kernel queues on a listening socket before the server accepts them."""


class CannotListen(Exception):
    """The address cannot be bound; the message names it, why, and the option to change."""

    def __init__(self, host: str, port: int, reason: str, change: str) -> None:
        self.host = host
        self.port = port
        self.reason = reason
        super().__init__(f"cannot listen on {_address(host, port)}: {reason} (change {change})")


def listen(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` and listening; :class:`CannotListen` if not.

    ``reuse_port``: other sockets of this user may listen on the same port too
    (``SO_REUSEPORT``), and the kernel spreads new connections over them (server workers).
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise CannotListen(host, port, _reason(exc), "--host or QUARRY_HOST") from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        change = "--host or QUARRY_HOST" if exc.errno == errno.EADDRNOTAVAIL else None
        raise CannotListen(host, port, _reason(exc), change or "--port or QUARRY_PORT") from exc
    return sock


def _reason(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
