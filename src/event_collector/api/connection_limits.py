"""The limits every connection is held to (docs/security.md), and how many connections fit in the process's
open-file limit. Enforced by the protocol (api/protocol.py); read from the settings once, at start-up."""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass

from ..settings import Settings

log = logging.getLogger(__name__)

# Descriptors kept out of MAX_CONNECTIONS for everything else: the store, OpenSearch connections, logs,
# and the connections being refused beyond the cap.
FILE_DESCRIPTOR_RESERVE = 128


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_line_bytes: int
    max_header_bytes: int
    max_headers: int
    header_read_timeout_seconds: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings, max_connections: int) -> "ConnectionLimits":
        return cls(settings.max_header_line_bytes, settings.max_header_bytes, settings.max_headers,
                   settings.header_read_timeout_seconds, max_connections)


def connection_cap(max_connections: int) -> int:
    """Raise this process's open-file soft limit to its hard limit (worker processes inherit it) and return
    how many connections fit in it with FILE_DESCRIPTOR_RESERVE to spare: MAX_CONNECTIONS, or fewer, with a
    warning, when the hard limit is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(soft, max_connections + FILE_DESCRIPTOR_RESERVE) if hard == resource.RLIM_INFINITY else hard
    if wanted > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, wanted, exc)
    fitting = max(1, soft - min(FILE_DESCRIPTOR_RESERVE, soft // 2))
    if fitting < max_connections:
        log.warning("the open-file limit (%d) leaves room for %d connections, not MAX_CONNECTIONS=%d: beyond "
                    "%d connections are answered 503; raise the hard limit (ulimit -Hn, LimitNOFILE=) to lift this",
                    soft, fitting, max_connections, fitting)
    return min(max_connections, fitting)
