"""The gateway's own addresses on the agents' networks: the only ones its model API listens on.

The gateway container sits on the outward network (to reach the upstream), its own internal one
and one small internal network per agent run. Its model API must not answer on the outward side,
so the server binds to each address it holds inside ``agent_subnets`` (from its config file)
instead of ``0.0.0.0``, and binds again when it joins a run's network (:func:`addresses_in`).
Standard library only: this module runs inside the gateway container.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from collections.abc import Iterable

__all__ = ["address_in", "addresses_in", "interface_addresses"]

_SIOCGIFADDR = 0x8915  # <linux/sockios.h>: the IPv4 address of an interface


def interface_addresses() -> list[str]:
    """The IPv4 address of every interface that has one (Linux)."""
    out = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                answer = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)
            except OSError:  # no IPv4 address on it
                continue
            out.append(socket.inet_ntoa(answer[20:24]))
    return out


def addresses_in(subnets: Iterable[str], addresses: Iterable[str] | None = None) -> list[str]:
    """Every one of ``addresses`` (default: this host's) inside one of ``subnets``."""
    nets = []
    for subnet in subnets:
        try:
            net = ipaddress.ip_network(subnet, strict=False)
        except ValueError:
            continue
        if net.version == 4:
            nets.append(net)
    candidates = interface_addresses() if addresses is None else addresses
    return [a for a in candidates if any(ipaddress.ip_address(a) in net for net in nets)]


def address_in(subnets: Iterable[str], addresses: Iterable[str] | None = None) -> str:
    """The first of ``addresses`` (default: this host's) inside one of ``subnets``.

    Raises ``RuntimeError`` when there is none: the caller must not fall back to listening on
    every interface."""
    nets = []
    for subnet in subnets:
        try:
            net = ipaddress.ip_network(subnet, strict=False)
        except ValueError:
            continue
        if net.version == 4:
            nets.append(net)
    candidates = list(interface_addresses() if addresses is None else addresses)
    for address in candidates:
        ip = ipaddress.ip_address(address)
        if any(ip in net for net in nets):
            return address
    raise RuntimeError(
        f"no address of this gateway ({', '.join(candidates) or 'none'}) is on the agents' "
        f"network ({', '.join(str(n) for n in nets) or 'no subnet configured'}): the model API "
        "does not start rather than listen on every interface"
    )
