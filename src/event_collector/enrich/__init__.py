"""What a request tells about its client beyond the event: address, place and user agent.

Worked out once per request (a batch's events share it) by an `Enricher` built once from the settings.
Each part that is off costs nothing on the hot path: with the defaults the peer's address is copied as the
server wrote it. May import `settings` and `exceptions` only: the envelope and the API build on it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..settings import Settings, parse_trusted_proxies
from .client_ip import ClientAddress, anonymized
from .place import Place, PlaceFinder
from .user_agent import UserAgentInfo, UserAgentParser


class ClientFields(msgspec.Struct, gc=False):
    client_ip: str | None = None
    geo: Place | None = None
    user_agent_info: UserAgentInfo | None = None


class Enricher:
    def __init__(self, settings: Settings) -> None:
        self._addresses = ClientAddress(parse_trusted_proxies(settings.trusted_proxies),
                                        settings.trusted_proxy_header)
        self._anonymize = settings.ip_anonymize
        self._places = PlaceFinder.open(settings.geoip_database) if settings.geoip_database else None
        self._user_agents = UserAgentParser() if settings.enrich_user_agent else None
        # With the defaults the client is the peer as the server wrote it, already a canonical address.
        self._peer_as_is = (not self._addresses.trusts_anyone and self._anonymize == "off"
                            and self._places is None)

    def client(self, scope: dict[str, Any], user_agent: str | None) -> ClientFields:
        peer = scope.get("client")
        host = peer[0] if peer else None
        info = self._user_agents.parse(user_agent) if self._user_agents is not None and user_agent else None
        # A dual-stack socket writes an IPv4 peer as ::ffff:a.b.c.d: that one is parsed to be written as IPv4.
        if self._peer_as_is and (host is None or not host.startswith("::ffff:")):
            return ClientFields(host, None, info)
        address = self._addresses.find(host, scope["headers"])
        if address is None:
            client_ip, place = None, None
        else:
            # The place comes from the whole address, before it is masked or dropped.
            place = self._places.find(address) if self._places is not None else None
            client_ip = anonymized(address, self._anonymize)
        return ClientFields(client_ip, place, info)
