from ipaddress import ip_address

import pytest

from event_collector.enrich.client_ip import ClientAddress, anonymized
from event_collector.settings import parse_trusted_proxies
from event_collector.exceptions import ConfigError

PROXIES = parse_trusted_proxies("10.0.0.0/8, 127.0.0.1 ::1")


def find(peer, *values, header="x-forwarded-for", trusted=PROXIES):
    raw = [(b"host", b"x")] + [(header.encode(), value.encode()) for value in values]
    found = ClientAddress(trusted, header).find(peer, raw)
    return None if found is None else str(found)


def test_an_untrusted_peer_is_the_client_whatever_its_headers_say():
    assert find("203.0.113.9", "198.51.100.1") == "203.0.113.9"
    assert find("203.0.113.9", "198.51.100.1", header="forwarded") == "203.0.113.9"


def test_no_trusted_proxies_means_the_peer():
    assert find("10.0.0.2", "198.51.100.1", trusted=()) == "10.0.0.2"


def test_the_chain_is_walked_from_the_right_skipping_trusted_proxies():
    # The client wrote its own 1.1.1.1; the first proxy appended the client's real address.
    assert find("10.0.0.2", "1.1.1.1, 198.51.100.7, 10.0.0.5") == "198.51.100.7"
    # Several header lines are one list.
    assert find("10.0.0.2", "1.1.1.1", "198.51.100.7", "10.0.0.5") == "198.51.100.7"


def test_when_every_hop_is_trusted_the_leftmost_is_taken():
    assert find("10.0.0.2", "10.0.0.9, 10.0.0.5") == "10.0.0.9"


def test_a_trusted_peer_without_the_header_is_the_client():
    assert find("127.0.0.1") == "127.0.0.1"


def test_an_entry_that_is_no_address_stops_the_walk_at_the_proxy_that_wrote_it():
    assert find("10.0.0.2", "198.51.100.7, unknown") == "10.0.0.2"
    assert find("10.0.0.2", "198.51.100.7, unknown, 10.0.0.5") == "10.0.0.5"


def test_forwarded_elements_are_read_for_their_for_node():
    header = 'for=198.51.100.7;proto=https, For="[2001:db8:cafe::17]:4711", for="10.0.0.5:8080";by=10.0.0.1'
    assert find("10.0.0.2", header, header="forwarded") == "2001:db8:cafe::17"
    assert find("10.0.0.2", "for=198.51.100.7, for=_hidden", header="forwarded") == "10.0.0.2"
    assert find("10.0.0.2", 'for=198.51.100.7;proto="a,b", for=10.0.0.9', header="forwarded") == "198.51.100.7"
    # A proxy set to write Forwarded passes X-Forwarded-For through as the client wrote it: ignored.
    assert find("10.0.0.2", "1.1.1.1", header="forwarded") == "10.0.0.2"


def test_ipv4_mapped_addresses_are_ipv4():
    assert find("::ffff:10.0.0.2", "198.51.100.7") == "198.51.100.7"
    assert find("::ffff:203.0.113.9") == "203.0.113.9"


@pytest.mark.parametrize(("address", "mode", "kept"), [
    ("198.51.100.7", "off", "198.51.100.7"),
    ("198.51.100.7", "mask", "198.51.100.0"),
    ("198.51.100.7", "drop", None),
    ("2001:db8:cafe:1:2:3:4:5", "mask", "2001:db8:cafe::"),
    ("2001:db8:cafe:1:2:3:4:5", "off", "2001:db8:cafe:1:2:3:4:5"),
])
def test_anonymizing(address, mode, kept):
    assert anonymized(ip_address(address), mode) == kept


@pytest.mark.parametrize("text", ["10.0.0.0/33", "proxy.local", "::ffff:10.0.0.0/8"])
def test_bad_trusted_proxies_stop_start_up_naming_the_variable(text):
    with pytest.raises(ConfigError, match="TRUSTED_PROXIES"):
        parse_trusted_proxies(text)


def test_trusted_proxies_written_as_ipv4_mapped_networks_are_ipv4():
    assert find("10.1.2.3", "198.51.100.7", trusted=parse_trusted_proxies("::ffff:10.0.0.0/104")) == "198.51.100.7"


def test_an_overlong_entry_is_no_address():
    assert find("10.0.0.2", "198.51.100.7, " + "1" * 10_000) == "10.0.0.2"
