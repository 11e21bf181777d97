from msgspec.structs import replace

from event_collector.enrich import Enricher
from event_collector.settings import Settings

DEFAULTS = Settings(jwt_secret="x")


def client_ip(settings: Settings, peer, *forwarded: str):
    scope = {"client": peer, "headers": [(b"x-forwarded-for", value.encode()) for value in forwarded]}
    return Enricher(settings).client(scope, None).client_ip


def test_by_default_the_peer_is_the_client_and_forwarding_headers_are_ignored():
    assert client_ip(DEFAULTS, ("203.0.113.9", 4000), "198.51.100.7") == "203.0.113.9"
    assert client_ip(DEFAULTS, ("2001:db8::1", 4000)) == "2001:db8::1"


def test_an_ipv4_peer_on_a_dual_stack_socket_is_written_as_ipv4():
    assert client_ip(DEFAULTS, ("::ffff:203.0.113.9", 4000)) == "203.0.113.9"


def test_no_peer_no_address():
    # A Unix socket has no peer address.
    assert client_ip(DEFAULTS, None) is None
    assert client_ip(replace(DEFAULTS, ip_anonymize="mask"), None) is None


def test_modes_apply_to_the_client_found_behind_trusted_proxies():
    trusted = replace(DEFAULTS, trusted_proxies="10.0.0.0/8")
    assert client_ip(trusted, ("10.0.0.2", 4000), "198.51.100.7") == "198.51.100.7"
    assert client_ip(replace(trusted, ip_anonymize="mask"), ("10.0.0.2", 4000), "198.51.100.7") == "198.51.100.0"
    assert client_ip(replace(trusted, ip_anonymize="drop"), ("10.0.0.2", 4000), "198.51.100.7") is None


def test_user_agents_are_parsed_only_when_asked():
    assert Enricher(DEFAULTS).client({"client": None, "headers": []}, "Mozilla/5.0").user_agent_info is None
