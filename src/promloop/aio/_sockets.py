"""Binding the listening sockets of a metrics server."""

from __future__ import annotations

import errno
import socket

from typing import Any, Final


_WILDCARDS: Final = frozenset({"::", "0.0.0.0"})  # noqa: S104 -- recognised, not bound


def reachable_host(addr: str) -> str:
    """Return the host a person (or another machine) opens to reach a server bound to *addr*.

    The bound address itself, except for the wildcard addresses of a server
    on every interface, which no client can connect to: this host's name
    then, as service discovery advertises it.
    """
    return socket.gethostname() if addr in _WILDCARDS else addr


def listening_sockets(addr: str, port: int) -> list[socket.socket]:
    """Bind every address *addr* stands for, all on one port.

    ``""`` means every interface: one dual-stack IPv6 socket where the host
    has IPv6 (it accepts IPv4 too), else IPv4.  A name such as ``localhost``
    may resolve to both ``::1`` and ``127.0.0.1``: both are bound, on the
    port the first one got.
    """
    if addr == "":
        return [_listening(dual_stack_socket(port))]
    infos = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            if sockets:  # the others follow the first one's port
                address = (address[0], sockets[0].getsockname()[1], *address[2:])  # noqa: PLW2901
            sockets.append(_bound(family, kind, proto, address))
        return [_listening(sock) for sock in sockets]
    except BaseException:
        for sock in sockets:
            sock.close()
        raise


def dual_stack_socket(port: int) -> socket.socket:
    """Bind (without listening) a socket for every interface, IPv6 and IPv4."""
    if socket.has_dualstack_ipv6():
        sock = _bound(socket.AF_INET6, socket.SOCK_STREAM, 0, ("::", port), True)
    else:  # pragma: no cover -- a host without IPv6
        sock = _bound(socket.AF_INET, socket.SOCK_STREAM, 0, ("0.0.0.0", port))  # noqa: S104
    return sock


def _listening(sock: socket.socket) -> socket.socket:
    sock.listen(128)
    return sock


def _bound(
    family: int, kind: int, proto: int, address: Any, dual_stack: bool = False
) -> socket.socket:
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, not dual_stack)
        sock.bind(address)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            msg = f"cannot listen on {address[0]!r} port {address[1]}: the address is in use"
            raise OSError(error.errno, msg) from error
        raise
    return sock
