"""Where a client is, from a local MaxMind-format database (GeoLite2 City, DB-IP Lite, or one of your own).

Only country, region (the first subdivision) and city are kept, their names in English. A file that is
missing, unreadable or not a MaxMind database turns the lookup off with one warning: no request fails for
it. A new file is read at the next start.
"""

from __future__ import annotations

import logging
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import maxminddb
import msgspec

log = logging.getLogger(__name__)


class Place(msgspec.Struct, gc=False):
    country_iso_code: str | None
    country_name: str | None
    region_iso_code: str | None
    region_name: str | None
    city_name: str | None


class PlaceFinder:
    def __init__(self, reader: Any) -> None:
        self._reader = reader

    @classmethod
    def open(cls, path: str) -> "PlaceFinder | None":
        try:
            reader = maxminddb.open_database(path)
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            log.warning("GEOIP_DATABASE=%r cannot be read as a MaxMind database (%s): events get no place",
                        path, exc)
            return None
        log.info("places from %s (%s, built %s)", path, reader.metadata().database_type,
                 reader.metadata().build_epoch)
        return cls(reader)

    def find(self, address: IPv4Address | IPv6Address) -> Place | None:
        try:
            record = self._reader.get(address)
        except (ValueError, maxminddb.InvalidDatabaseError):
            # An IPv6 address in an IPv4-only database, or a damaged record: no place, the event goes on.
            return None
        if not isinstance(record, dict):
            return None
        country = _section(record.get("country"))
        subdivisions = record.get("subdivisions")
        region = _section(subdivisions[0]) if isinstance(subdivisions, list) and subdivisions else {}
        city = _section(record.get("city"))
        place = Place(_text(country.get("iso_code")), _name(country), _text(region.get("iso_code")), _name(region),
                      _name(city))
        return None if place == _NOWHERE else place


_NOWHERE = Place(None, None, None, None, None)


def _section(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _name(section: dict) -> str | None:
    names = section.get("names")
    return _text(names.get("en")) if isinstance(names, dict) else None


def _text(value: Any) -> str | None:
    # Bounded like every keyword of the document; a database is trusted, but not to that degree.
    return value[:1024] if isinstance(value, str) and value else None
