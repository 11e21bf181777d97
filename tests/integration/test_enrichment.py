"""Client address, place and user agent against a real collector and OpenSearch.

The peer is varied by connecting from different loopback addresses (127.0.0.2 is trusted, 127.0.0.1 is
not); places come from a small MaxMind-format database the test writes with mmdb-writer."""

from pathlib import Path

import httpx
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from support import CollectorProcess, event

PROXY, STRANGER = "127.0.0.2", "127.0.0.1"
IPHONE_SAFARI = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                 "Version/17.1 Mobile/15E148 Safari/604.1")
SEOUL = {"country_iso_code": "KR", "country_name": "South Korea", "region_iso_code": "11", "region_name": "Seoul",
         "city_name": "Seoul"}
OSAKA = {"country_iso_code": "JP", "country_name": "Japan", "region_iso_code": "27", "region_name": "Osaka",
         "city_name": "Osaka"}


def city_record(place: dict) -> dict:
    """The layout of MaxMind's City databases."""
    return {"country": {"iso_code": place["country_iso_code"], "names": {"en": place["country_name"]}},
            "subdivisions": [{"iso_code": place["region_iso_code"], "names": {"en": place["region_name"]}}],
            "city": {"names": {"en": place["city_name"], "ko": "도시"}}}


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> Path:
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-City")
    # Networks narrower than what IP_ANONYMIZE=mask keeps, so that a place found from a masked address
    # would be no place at all.
    writer.insert_network(IPSet(["198.51.100.0/29"]), city_record(SEOUL))
    writer.insert_network(IPSet(["2001:db8:cafe:1::/64"]), city_record(OSAKA))
    path = tmp_path_factory.mktemp("geoip") / "city.mmdb"
    writer.to_db_file(str(path))
    return path


def post_from(collector: CollectorProcess, source: str, events: list[dict], headers: dict | None = None,
              batch: bool = False) -> httpx.Response:
    """Send from `source` (a loopback address), so that the collector sees it as the peer."""
    with httpx.Client(base_url=collector.url, timeout=30,
                      transport=httpx.HTTPTransport(local_address=source)) as http:
        headers = {**collector.auth(), **(headers or {})}
        if batch:
            return http.post("/events/batch", json=events, headers=headers)
        return http.post("/events", json=events[0], headers=headers)


def indexed(opensearch, collector: CollectorProcess, log_id: str) -> dict:
    return opensearch.indexed_document(collector.environment, log_id)


@pytest.fixture(scope="module")
def enriched(tmp_path_factory, places):
    collector = CollectorProcess(tmp_path_factory.mktemp("enriched"), TRUSTED_PROXIES=f"{PROXY}/32",
                                 GEOIP_DATABASE=places, ENRICH_USER_AGENT="true").start()
    yield collector
    collector.stop()


def test_a_trusted_proxy_names_the_client(enriched, opensearch):
    sent = event()
    # The client wrote 1.1.1.1 itself; the proxy appended the address it saw.
    response = post_from(enriched, PROXY, [sent], {"X-Forwarded-For": "1.1.1.1, 198.51.100.7"})
    assert response.status_code == 200
    source = indexed(opensearch, enriched, sent["log_id"])
    assert source["client_ip"] == "198.51.100.7"
    assert source["geo"] == SEOUL


def test_a_spoofed_header_from_an_untrusted_peer_is_ignored(enriched, opensearch):
    sent = event()
    response = post_from(enriched, STRANGER, [sent], {"X-Forwarded-For": "198.51.100.7",
                                                       "Forwarded": "for=198.51.100.7"})
    assert response.status_code == 200
    source = indexed(opensearch, enriched, sent["log_id"])
    assert source["client_ip"] == STRANGER
    assert source["geo"] is None


def test_the_user_agent_is_parsed(enriched, opensearch):
    sent = event()
    assert post_from(enriched, STRANGER, [sent], {"User-Agent": IPHONE_SAFARI}).status_code == 200
    source = indexed(opensearch, enriched, sent["log_id"])
    assert source["user_agent"] == IPHONE_SAFARI
    assert source["user_agent_info"] == {"browser_family": "Mobile Safari", "browser_version": "17.1",
                                         "os_family": "iOS", "os_version": "17.1", "device_family": "iPhone",
                                         "device_brand": "Apple", "device_model": "iPhone"}


def test_every_event_of_a_batch_is_enriched(enriched, opensearch):
    sent = [event() for _ in range(3)]
    response = post_from(enriched, PROXY, sent, {"X-Forwarded-For": "2001:db8:cafe:1::5", "User-Agent": IPHONE_SAFARI},
                         batch=True)
    assert response.json()["accepted"] == 3
    for one in sent:
        source = indexed(opensearch, enriched, one["log_id"])
        assert (source["client_ip"], source["geo"]) == ("2001:db8:cafe:1::5", OSAKA)
        assert source["user_agent_info"]["os_family"] == "iOS"


def test_new_fields_are_mapped_by_the_template(enriched, opensearch):
    sent = event()
    assert post_from(enriched, PROXY, [sent], {"X-Forwarded-For": "198.51.100.7", "User-Agent": IPHONE_SAFARI}
                     ).status_code == 200
    indexed(opensearch, enriched, sent["log_id"])
    mappings = opensearch.http.get(f"/{opensearch.pattern(enriched.environment)}/_mapping").json()
    properties = next(iter(mappings.values()))["mappings"]["properties"]
    assert properties["client_ip"] == {"type": "ip"}
    assert properties["geo"]["properties"]["city_name"] == {"type": "keyword"}
    assert properties["user_agent_info"]["properties"]["browser_family"] == {"type": "keyword"}
    # client_ip is an ip field: a CIDR query finds it.
    hits = opensearch.search(enriched.environment, {"term": {"client_ip": "198.51.100.0/24"}})
    assert sent["log_id"] in {hit["_source"]["log_id"] for hit in hits}


@pytest.mark.parametrize(("mode", "ipv4", "ipv6"), [("mask", "198.51.100.0", "2001:db8:cafe::"),
                                                    ("drop", None, None)])
def test_anonymizing_keeps_the_place_found_from_the_whole_address(collector_factory, opensearch, places, mode,
                                                                   ipv4, ipv6):
    collector = collector_factory(TRUSTED_PROXIES=PROXY, GEOIP_DATABASE=places, IP_ANONYMIZE=mode)
    sent = {"198.51.100.7": event(), "2001:db8:cafe:1::5": event()}
    for address, one in sent.items():
        assert post_from(collector, PROXY, [one], {"X-Forwarded-For": address}).status_code == 200
    v4 = indexed(opensearch, collector, sent["198.51.100.7"]["log_id"])
    v6 = indexed(opensearch, collector, sent["2001:db8:cafe:1::5"]["log_id"])
    assert (v4["client_ip"], v4["geo"]) == (ipv4, SEOUL)
    assert (v6["client_ip"], v6["geo"]) == (ipv6, OSAKA)
    # Enrichment that is off leaves its fields null.
    assert v4["user_agent_info"] is None


def test_by_default_the_peer_is_kept_and_nothing_else_is_added(collector, opensearch):
    sent = event()
    assert post_from(collector, PROXY, [sent], {"X-Forwarded-For": "198.51.100.7", "User-Agent": IPHONE_SAFARI}
                     ).status_code == 200
    source = indexed(opensearch, collector, sent["log_id"])
    assert (source["client_ip"], source["geo"], source["user_agent_info"]) == (PROXY, None, None)


@pytest.mark.parametrize("problem", ["missing", "not a database"])
def test_an_unusable_geoip_file_warns_once_and_fails_no_request(collector_factory, opensearch, tmp_path, problem):
    path = tmp_path / "city.mmdb"
    if problem == "not a database":
        path.write_bytes(b"this is not a MaxMind database" * 100)
    collector = collector_factory(TRUSTED_PROXIES=PROXY, GEOIP_DATABASE=path)
    sent = [event() for _ in range(3)]
    for one in sent:
        assert post_from(collector, PROXY, [one], {"X-Forwarded-For": "198.51.100.7"}).status_code == 200
    for one in sent:
        source = indexed(opensearch, collector, one["log_id"])
        assert (source["client_ip"], source["geo"]) == ("198.51.100.7", None)
    assert collector.log().count("GEOIP_DATABASE") == 1, collector.log()


def test_proxies_set_to_write_forwarded_are_read_from_it_alone(collector_factory, opensearch):
    collector = collector_factory(TRUSTED_PROXIES=PROXY, TRUSTED_PROXY_HEADER="forwarded")
    sent = event()
    # The client's own X-Forwarded-For passes such a proxy untouched: it must not count.
    response = post_from(collector, PROXY, [sent], {"X-Forwarded-For": "1.1.1.1",
                                                    "Forwarded": 'for="[2001:db8:cafe:1::5]:4711";proto=https'})
    assert response.status_code == 200
    assert indexed(opensearch, collector, sent["log_id"])["client_ip"] == "2001:db8:cafe:1::5"
