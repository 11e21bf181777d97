"""Sources: who may send through the tracking API (`/v1/*`), each with its write keys, its indices, and
optionally its browser origins and its rate.

SOURCES_FILE names a YAML file (JSON is YAML too):

    sources:
      - name: web                    # lowercase letters, digits and "-": it goes into index names
        write_keys: [wk_3f9a…]       # a list, so that keys can rotate: add the new, deploy, drop the old
        allowed_origins: [https://shop.example.com]   # CORS for this source's browser traffic
        rate_limit: 500              # events a second for the whole source (0 or absent: none)
        index_prefix: events_shop    # default events_{name}; indices are {prefix}_{SERVER_ENVIRONMENT}_{YYYY}-{M}

The file is read at start-up (a bad one stops it), and again on SIGHUP and whenever it changes. A bad
file met then is refused with a message and the last good one stays in force: a typo never locks every
sender out. Keys are looked up by their SHA-256, so a lookup's time says nothing about a key's bytes.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Annotated

import msgspec
import yaml
from msgspec import Meta

from .exceptions import ConfigError
from .watched_file import WatchedFile

log = logging.getLogger(__name__)

# Index-safe without ambiguity: no "_", so that {prefix}_{environment}_{month} reads back one way only.
_Name = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")]
# Printable ASCII, long enough not to be guessed; the SDKs send it as HTTP Basic's user name.
_WriteKey = Annotated[str, Meta(min_length=16, max_length=256, pattern=r"^[\x21-\x39\x3b-\x7e]+$")]
_Origin = Annotated[str, Meta(pattern=r"^(\*|[A-Za-z][A-Za-z0-9+.-]*://[^/\s,*]+)$")]
_Prefix = Annotated[str, Meta(pattern=r"^events_[a-z0-9][a-z0-9-]{0,59}$")]


class Source(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: _Name
    write_keys: Annotated[list[_WriteKey], Meta(min_length=1)]
    allowed_origins: list[_Origin] = []
    rate_limit: Annotated[float, Meta(ge=0, le=1e9)] = 0.0
    index_prefix: _Prefix | None = None

    @property
    def prefix(self) -> str:
        """Its indices' names start with this, then `_{SERVER_ENVIRONMENT}_{YYYY}-{M}`."""
        return self.index_prefix or f"events_{self.name}"


class _File(msgspec.Struct, forbid_unknown_fields=True):
    sources: list[Source]


def key_digest(write_key: str | bytes) -> bytes:
    return hashlib.sha256(write_key.encode() if isinstance(write_key, str) else write_key).digest()


class SourceBook:
    """One reading of the file: the sources by name, and by the digest of each of their write keys."""

    def __init__(self, sources: list[Source]) -> None:
        self.sources = {source.name: source for source in sources}
        self._by_key = {key_digest(key): source for source in sources for key in source.write_keys}

    def by_key(self, write_key: str | bytes) -> Source | None:
        return self._by_key.get(key_digest(write_key))

    @classmethod
    def parse(cls, text: str, where: str, environment: str) -> "SourceBook":
        """Raises ConfigError naming the file and what is wrong in it."""
        try:
            data = yaml.safe_load(text)
            parsed = msgspec.convert(data, _File)
        except yaml.YAMLError as exc:
            raise ConfigError(f"SOURCES_FILE {where}: not YAML: {exc}") from None
        except msgspec.ValidationError as exc:
            raise ConfigError(f"SOURCES_FILE {where}: {exc}") from None
        _check_distinct(parsed.sources, where, environment)
        return cls(parsed.sources)


def _check_distinct(sources: list[Source], where: str, environment: str) -> None:
    seen_names, seen_prefixes, seen_keys = set(), {f"events_{environment}": "the JWT API"}, set()
    for source in sources:
        if source.name in seen_names:
            raise ConfigError(f"SOURCES_FILE {where}: source {source.name!r} is named twice")
        seen_names.add(source.name)
        if source.prefix in seen_prefixes:
            raise ConfigError(f"SOURCES_FILE {where}: source {source.name!r} would write into the indices of "
                              f"{seen_prefixes[source.prefix]} ({source.prefix}_*)")
        seen_prefixes[source.prefix] = f"source {source.name!r}"
        for key in source.write_keys:
            if key in seen_keys:
                raise ConfigError(f"SOURCES_FILE {where}: a write key of source {source.name!r} is given twice "
                                  "(a key names one source)")
            seen_keys.add(key)


class Sources:
    """The sources in force: read from SOURCES_FILE, and read again by `reload` (SIGHUP, or a change the
    api's watch noticed). Empty when SOURCES_FILE is not set: the tracking API then refuses every key."""

    def __init__(self, path: str, environment: str) -> None:
        self.path = path
        self.file = WatchedFile("SOURCES_FILE", path)
        self._environment = environment
        self.book = SourceBook([])
        if path:
            self.book = self._read()

    def _read(self) -> SourceBook:
        return SourceBook.parse(self.file.read_text(), self.path, self._environment)

    def changed(self) -> bool:
        return self.file.changed()

    def reload(self) -> bool:
        """Read the file again; on any fault keep the sources in force and say why. True when it took."""
        if not self.path:
            return False
        try:
            book = self._read()
        except ConfigError as exc:
            log.error("%s; the sources read before stay in force", exc)
            return False
        self.book = book
        log.info("SOURCES_FILE %s read: %d sources", self.path, len(book.sources))
        return True
