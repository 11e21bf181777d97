"""How the collector reaches OpenSearch, read once from the settings: its nodes, credentials, TLS and signing.

`connection_from_settings` checks everything at start-up and raises ConfigError naming the variable at
fault. No message here ever shows a credential: a node is named by its URL without the user info.
"""

from __future__ import annotations

import logging
import re
import ssl
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp

from ..exceptions import ConfigError
from ..settings import Settings
from .sigv4 import SigV4Signer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Node:
    """One node of the cluster: `base` is its URL without user info or trailing slash (paths are appended);
    `authorization` the Basic credentials' header value, when it has credentials (never shown: repr=False)."""

    base: str
    authorization: str | None = field(default=None, repr=False, compare=False)

    @property
    def label(self) -> str:
        return self.base


@dataclass(frozen=True)
class Connection:
    nodes: list[Node]
    # For https nodes: verified against the system trust store or OPEN_SEARCH_CA_CERTS, with an optional
    # client certificate. None when every node is plain http.
    ssl_context: ssl.SSLContext | None = None
    signer: SigV4Signer | None = None
    # Said at every start (OpenSearchClient.open), so that an unsafe setting never goes unnoticed.
    warnings: list[str] = field(default_factory=list)


def connection_from_settings(settings: Settings) -> Connection:
    nodes = parse_nodes(settings.open_search_dns)
    warnings: list[str] = []
    if settings.open_search_password and not settings.open_search_username:
        raise ConfigError("OPEN_SEARCH_PASSWORD is set but OPEN_SEARCH_USERNAME is not")
    default_auth = (aiohttp.encode_basic_auth(settings.open_search_username, settings.open_search_password)
                    if settings.open_search_username else None)
    signer = None
    if settings.open_search_auth == "sigv4":
        if default_auth is not None or any(node.authorization for node in nodes):
            raise ConfigError("OPEN_SEARCH_AUTH=sigv4 signs requests with AWS credentials: leave OPEN_SEARCH_USERNAME, "
                              "OPEN_SEARCH_PASSWORD and the user info of OPEN_SEARCH_DNS empty")
        signer = SigV4Signer.from_aws_chain(settings.aws_region, settings.open_search_aws_service)
    else:
        # A node's own user info wins over OPEN_SEARCH_USERNAME / OPEN_SEARCH_PASSWORD, as in other clients.
        nodes = [node if node.authorization else Node(node.base, default_auth) for node in nodes]
        if any(node.authorization and node.base.startswith("http://") for node in nodes):
            warnings.append("credentials are sent to OpenSearch over plain http: anyone on the path can read them; "
                            "use https:// in OPEN_SEARCH_DNS")
    context = None
    if any(node.base.startswith("https://") for node in nodes):
        context = tls_context(settings)
        if not settings.open_search_verify_certs:
            warnings.append("OPEN_SEARCH_VERIFY_CERTS=false: OpenSearch's TLS certificates are not verified, so anyone "
                            "on the path can pose as OpenSearch and read what is sent, credentials included")
    return Connection(nodes, context, signer, warnings)


def parse_nodes(dns: str) -> list[Node]:
    """OPEN_SEARCH_DNS: one URL, or several nodes of one cluster separated by commas."""
    nodes = []
    for text in (part.strip() for part in dns.split(",")):
        if not text:
            continue
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"OPEN_SEARCH_DNS: {redact(text)!r} is not an http:// or https:// URL with a host")
        if parts.query or parts.fragment:
            raise ConfigError(f"OPEN_SEARCH_DNS: {redact(text)!r} has a query or fragment; give the node's base URL")
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number in range
        except ValueError:
            raise ConfigError(f"OPEN_SEARCH_DNS: {redact(text)!r} has an invalid port") from None
        netloc = parts.netloc.rpartition("@")[2]
        base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        authorization = None
        if parts.username is not None:
            authorization = aiohttp.encode_basic_auth(unquote(parts.username), unquote(parts.password or ""))
        nodes.append(Node(base, authorization))
    if not nodes:
        raise ConfigError("OPEN_SEARCH_DNS is empty: give the URL of at least one OpenSearch node")
    if len({node.base for node in nodes}) < len(nodes):
        raise ConfigError("OPEN_SEARCH_DNS names the same node twice")
    return nodes


_USER_INFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)?[^/]*@")  # up to the last @ of the authority


def redact(url: str) -> str:
    """A URL as it may be shown: without its user info."""
    return _USER_INFO.sub(lambda match: (match.group(1) or "") + "***@", url)


def tls_context(settings: Settings) -> ssl.SSLContext:
    """The system trust store, or OPEN_SEARCH_CA_CERTS; a client certificate when one is given."""
    try:
        context = ssl.create_default_context(cafile=settings.open_search_ca_certs or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"OPEN_SEARCH_CA_CERTS={settings.open_search_ca_certs!r}: cannot read a PEM bundle of CA "
                          f"certificates from it ({exc})") from None
    if not settings.open_search_verify_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if settings.open_search_client_key and not settings.open_search_client_cert:
        raise ConfigError("OPEN_SEARCH_CLIENT_KEY is set but OPEN_SEARCH_CLIENT_CERT is not")
    if settings.open_search_client_cert:
        try:
            context.load_cert_chain(settings.open_search_client_cert, settings.open_search_client_key or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"OPEN_SEARCH_CLIENT_CERT={settings.open_search_client_cert!r} / OPEN_SEARCH_CLIENT_KEY="
                              f"{settings.open_search_client_key!r}: cannot load the client certificate and its "
                              f"unencrypted key ({exc})") from None
    return context
