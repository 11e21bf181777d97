"""`event-collector verify` against real collector processes and the real OpenSearch node: a healthy
deployment passes, through the JWT API and the tracking API, checked in OpenSearch or through the receipts,
and the figures agree with OpenSearch's own. The drills (kill -9, OpenSearch restarted):
tests/faults/test_verify_drills.py."""

from __future__ import annotations

import json

from support import OPENSEARCH_URL, Nginx, verify_process

from test_tracking import KEY, sources_file, source_environment

EVENT_NAME = "event-collector-verify"


def run_verify(url: str, *options: str, timeout: float = 180) -> tuple[int, str, str]:
    with verify_process(url, *options) as process:
        out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def test_a_healthy_deployment_passes_and_its_figures_agree_with_opensearch(collector, opensearch):
    # An index of the pattern made without the collector's template (log_id a text field) cannot be searched by
    # log_id: it is named in the report, and the other indices are still counted.
    foreign = f"events_{collector.environment}_1999-1"
    opensearch.http.put(f"/{foreign}", json={"mappings": {"properties": {"log_id": {"type": "text"}}}}
                        ).raise_for_status()
    try:
        code, out, err = run_verify(collector.url, "--events", "300", "--rate", "150", "--token", collector.token(),
                                    "--opensearch", OPENSEARCH_URL,
                                    "--index-pattern", f"events_{collector.environment}_*", "--deadline", "60",
                                    "--json")
    finally:
        opensearch.http.delete(f"/{foreign}")
    assert code == 0, out + err
    report = json.loads(out)
    assert report["unsearchable_indices"] == [foreign]
    assert report["sent"] == report["acknowledged"] == report["indexed"] == 300
    assert report["lost"] == report["duplicated"] == report["indexed_without_2xx"] == 0
    assert report["statuses"] == {"200": 300} and report["transport_errors"] == {} and report["resent"] == 0
    assert report["latency"]["count"] == 300 and 0 <= report["latency"]["p50"] <= report["latency"]["p99"]
    assert report["latency"]["resolution_seconds"] == 1.0
    # OpenSearch's own count: the run's 300 ids, once each, carrying the verify event name.
    counts = opensearch.log_id_counts(collector.environment)
    assert counts == {f"verify-{report['run_id']}-{n}": 1 for n in range(300)}
    document = opensearch.indexed_document(collector.environment, f"verify-{report['run_id']}-7")
    assert document["event_info"]["event"] == EVENT_NAME and document["event_info"]["label"] == report["run_id"]


def test_a_healthy_tracking_api_passes_with_the_default_index_pattern(collector_factory, opensearch, tmp_path):
    tracking = collector_factory(SOURCES_FILE=str(sources_file(tmp_path)), JWT_SECRET="")
    code, out, err = run_verify(tracking.url, "--events", "200", "--rate", "200", "--write-key", KEY,
                                "--opensearch", OPENSEARCH_URL, "--deadline", "60")
    assert code == 0, out + err
    assert "PASS: all 200 events answered 2xx are indexed, each exactly once" in out
    assert "answered 2xx      200" in out and "lost              0" in out and "duplicated        0" in out
    run_id = out.split()[2].rstrip(":")
    counts = opensearch.log_id_counts(source_environment(tracking))
    assert counts == {f"verify-{run_id}-{n}": 1 for n in range(200)}


def test_credentials_opensearch_refuses_stop_the_run_with_exit_2(collector, opensearch, tmp_path):
    guarded = Nginx(tmp_path).start(require_password=True, password="right")
    try:
        code, out, err = run_verify(collector.url, "--events", "5", "--rate", "50", "--token", collector.token(),
                                    "--opensearch", guarded.url.replace("://", "://operator:wrong@"))
    finally:
        guarded.stop()
    assert code == 2 and out == ""
    assert "OpenSearch refused verify's search (401" in err and "wrong" not in err


def test_a_healthy_deployment_passes_through_receipts_alone_which_cannot_see_duplicates(collector, opensearch):
    code, out, err = run_verify(collector.url, "--events", "300", "--rate", "150", "--token", collector.token(),
                                "--deadline", "60", "--json")
    assert code == 0, out + err
    report = json.loads(out)
    assert report["sent"] == report["acknowledged"] == report["indexed"] == 300 and report["lost"] == 0
    assert report["duplicated"] is None and report["lost_states"] == {}
    assert report["checked_by"].startswith(f"receipts {collector.url}/v1/receipts")
    assert report["verdict"] == "PASS: all 300 events answered 2xx are indexed (receipts cannot see duplicates)"
    # What the receipts said is what OpenSearch holds.
    assert opensearch.log_id_counts(collector.environment) == {f"verify-{report['run_id']}-{n}": 1 for n in range(300)}


def test_a_source_checks_its_events_through_receipts_with_its_write_key(collector_factory, opensearch, tmp_path):
    tracking = collector_factory(SOURCES_FILE=str(sources_file(tmp_path)), JWT_SECRET="")
    code, out, err = run_verify(tracking.url, "--events", "100", "--rate", "200", "--write-key", KEY,
                                "--deadline", "60")
    assert code == 0, out + err
    assert "duplicated        not visible: receipts cannot see duplicates (check with --opensearch)" in out
    assert "indexed           100" in out


def test_opensearch_tls_is_verified_unless_insecure(collector, opensearch, tmp_path):
    from certificates import CertificateAuthority

    issued = CertificateAuthority(tmp_path, "private").issue("nginx", server=True)
    (tmp_path / "nginx").mkdir()
    tls = Nginx(tmp_path / "nginx").start(tls=(issued.certificate, issued.key))
    try:
        options = ["--events", "20", "--rate", "100", "--token", collector.token(), "--opensearch", tls.url,
                   "--index-pattern", f"events_{collector.environment}_*", "--deadline", "30"]
        refused_code, refused_out, refused_err = run_verify(collector.url, *options)
        code, out, err = run_verify(collector.url, *options, "--insecure")
    finally:
        tls.stop()
    assert refused_code == 2 and refused_out == "", refused_out + refused_err
    assert "TLS refused the certificate" in refused_err and "--insecure skips the check" in refused_err
    assert code == 0 and "PASS: all 20 events answered 2xx are indexed, each exactly once" in out, out + err


def test_a_pattern_of_indices_without_the_template_only_is_a_search_that_finds_nothing(collector, opensearch):
    # OpenSearch refuses the whole search (400, all shards failed) when every index of the pattern has a text
    # log_id: verify reads that as nothing found there, names the indices, and does not stop.
    foreign = f"events_{collector.environment}_1999-1"
    opensearch.http.put(f"/{foreign}", json={"settings": {"number_of_shards": 2, "number_of_replicas": 0},
                                             "mappings": {"properties": {"log_id": {"type": "text"}}}}
                        ).raise_for_status()
    try:
        code, out, err = run_verify(collector.url, "--events", "10", "--rate", "100", "--token", collector.token(),
                                    "--opensearch", OPENSEARCH_URL, "--index-pattern", foreign, "--deadline", "2",
                                    "--json")
    finally:
        opensearch.http.delete(f"/{foreign}")
    assert code == 1, out + err
    report = json.loads(out)
    assert report["unsearchable_indices"] == [foreign] and report["failed_polls"] == 0
    assert report["acknowledged"] == report["lost"] == 10
