"""The client's address: the connection's peer, or what trusted proxies say the client was.

Anyone can send `X-Forwarded-For` or `Forwarded`, so they are read only when the peer is one of
TRUSTED_PROXIES, and only the one header the proxies are set to write (TRUSTED_PROXY_HEADER): a proxy
appends to that header but passes the other through as the client wrote it. The chain is walked from the
right, the peer first: every hop that is a trusted proxy is skipped, and the first one that is not is the
client. When an entry is not an address (`unknown`, an obfuscated `_name`, garbage) the walk stops at the
last address it reached, the proxy that wrote the entry (nginx's realip does the same). When every hop is
trusted, the leftmost is taken.
"""

from __future__ import annotations

import functools
import re
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Iterable, Literal
from urllib.request import parse_http_list

from ..settings import Network

Address = IPv4Address | IPv6Address
Anonymize = Literal["off", "mask", "drop"]
ForwardingHeader = Literal["x-forwarded-for", "forwarded"]

# What IP_ANONYMIZE=mask keeps: an IPv4 address without its last octet (/24), an IPv6 address cut to its
# site (/48). As integer masks: building an ip_network per request costs ten times more.
_MASKS = {4: (IPv4Address, 0xFFFFFF00), 6: (IPv6Address, ((1 << 48) - 1) << 80)}
# RFC 7239: the `for` parameter of one element; its value a token or a quoted string.
_FOR_PARAMETER = re.compile(r'(?:^|;)\s*for\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)', re.IGNORECASE)


class ClientAddress:
    """Finds the client's address of one request (`scope["client"]` and the raw header list)."""

    def __init__(self, trusted: tuple[Network, ...], header: ForwardingHeader) -> None:
        self._trusted = trusted
        self._header = header.encode()

    @property
    def trusts_anyone(self) -> bool:
        return bool(self._trusted)

    def find(self, peer: str | None, raw_headers: Iterable[tuple[bytes, bytes]]) -> Address | None:
        address = _address(peer) if peer is not None else None
        if address is None or not self._trusted or not self._is_trusted(address):
            return address
        values = [value.decode("latin-1") for name, value in raw_headers if name == self._header]
        # Several header lines form one list, in order (RFC 9110).
        entries = _forwarded_for(values) if self._header == b"forwarded" else _x_forwarded_for(values)
        for entry in reversed(entries):
            hop = _address(entry)
            if hop is None:
                return address
            address = hop
            if not self._is_trusted(address):
                return address
        return address

    def _is_trusted(self, address: Address) -> bool:
        return any(address in network for network in self._trusted)


def anonymized(address: Address, mode: Anonymize) -> str | None:
    if mode == "off":
        return str(address)
    if mode == "drop":
        return None
    kind, mask = _MASKS[address.version]
    return str(kind(int(address) & mask))


def _x_forwarded_for(values: list[str]) -> list[str]:
    return [entry.strip() for value in values for entry in value.split(",")]


def _forwarded_for(values: list[str]) -> list[str]:
    """The `for` node of each element (elements are split on commas outside quoted strings); an element
    without one gives "" (not an address), which stops the walk there."""
    entries = []
    for value in values:
        for element in parse_http_list(value):
            match = _FOR_PARAMETER.search(element)
            entries.append(_node_address(match.group(1)) if match else "")
    return entries


def _node_address(node: str) -> str:
    """RFC 7239 node: 192.0.2.43, "192.0.2.43:47011", "[2001:db8::17]:4711"; the port is dropped."""
    if node.startswith('"'):
        node = node[1:-1].replace("\\", "")
    if node.startswith("["):
        return node[1:node.find("]")] if "]" in node else ""
    return node.partition(":")[0] if node.count(":") == 1 else node


# The longest address written as text: an IPv6 address with an IPv4 tail and a zone.
_MAX_ADDRESS_CHARS = 64


def _address(text: str) -> Address | None:
    return _parsed(text) if len(text) <= _MAX_ADDRESS_CHARS else None


# Parsing an address costs ~5 µs in pure Python; the same ones come again and again (the proxies, a client's
# every request). Bounded in entries, and each key in length: a flood of new addresses only evicts.
@functools.lru_cache(maxsize=4096)
def _parsed(text: str) -> Address | None:
    try:
        address = ip_address(text.partition("%")[0])
    except ValueError:
        return None
    mapped = address.ipv4_mapped if address.version == 6 else None
    # A dual-stack socket shows an IPv4 client as ::ffff:a.b.c.d: it is an IPv4 client.
    return mapped or address

