"""/livez and /readyz against real collector processes, in each state an orchestrator must tell apart."""

import resource
import signal

import httpx

from support import OPENSEARCH_URL, StallingProxy, event, free_port, wait_until


def readyz(collector) -> httpx.Response:
    return collector.http.get("/readyz")


def test_a_started_collector_is_live_and_ready(collector):
    live = collector.http.get("/livez")
    assert live.status_code == 200 and live.json()["status"] == "alive"
    ready = readyz(collector)
    assert ready.status_code == 200
    report = ready.json()
    assert (report["status"], report["reasons"]) == ("ready", [])
    assert report["opensearch"] == {"delivery": "flowing"}
    assert report["ack_mode"] == "durable"
    head = collector.http.head("/readyz")
    assert head.status_code == 200 and head.content == b""
    for path in ("/readyz", "/livez"):
        refused = collector.http.post(path)
        assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
    assert collector.http.get("/readyz/").status_code == 404


def test_opensearch_down_is_reported_but_the_collector_stays_ready(collector_factory):
    collector = collector_factory(OPEN_SEARCH_DNS=f"http://127.0.0.1:{free_port()}")
    assert collector.post_event(event()).status_code == 200
    report = wait_until(lambda: _paused(readyz(collector)), timeout=30, message="delivery reported paused")
    assert "unreachable" in report["opensearch"]["reason"] or "OpenSearch" in report["opensearch"]["reason"]
    response = readyz(collector)
    assert response.status_code == 200 and response.json()["status"] == "ready"
    # ... and it does keep events meanwhile.
    assert collector.post_event(event()).json()["status"] in ("created", "pending")


def _paused(response: httpx.Response) -> dict | None:
    report = response.json()
    return report if report["opensearch"]["delivery"] == "paused" else None


def test_a_store_at_its_cap_makes_it_unready_until_the_backlog_drains(collector_factory, opensearch):
    # OpenSearch out of reach at first (the proxy leads to a closed port): events pile up in the store.
    proxy = StallingProxy(free_port())
    try:
        collector = collector_factory(OPEN_SEARCH_DNS=f"http://127.0.0.1:{proxy.port}", PENDING_MAX_BYTES=20_000)
        kept = []
        for _ in range(200):
            sent = event(param={"padding": "p" * 500})
            response = collector.post_event(sent)
            if response.status_code == 503:
                break
            kept.append(sent["log_id"])
        assert response.status_code == 503, "the store never reached its cap"
        unready = readyz(collector)
        assert unready.status_code == 503
        assert unready.json()["status"] == "unready"
        assert any("PENDING_MAX_BYTES" in reason for reason in unready.json()["reasons"])
        assert collector.http.get("/livez").status_code == 200

        proxy.upstream_port = int(OPENSEARCH_URL.rsplit(":", 1)[1])
        wait_until(lambda: readyz(collector).status_code == 200, timeout=60, message="ready once the backlog drains")
        wait_until(lambda: set(kept) <= set(opensearch.log_id_counts(collector.environment)), timeout=60,
                   message="what was kept indexed")
    finally:
        proxy.close()


def test_a_stop_signal_makes_it_unready_at_once_while_it_still_serves_then_drains(collector_factory, opensearch):
    # OpenSearch stalls (the proxy forwards nothing), so the buffer cannot ship and the drain takes the grace.
    proxy = StallingProxy(int(OPENSEARCH_URL.rsplit(":", 1)[1]))
    try:
        collector = collector_factory(ACK_MODE="memory", OPEN_SEARCH_DNS=f"http://127.0.0.1:{proxy.port}",
                                      OPEN_SEARCH_TIMEOUT_SECONDS=300, SHUTDOWN_DELAY_SECONDS=3,
                                      SHUTDOWN_GRACE_SECONDS=8)
        wait_until(lambda: "index template" in collector.log(), message="the template installed")
        proxy.forwarding.clear()
        events = [event() for _ in range(50)]
        assert {collector.post_event(e).status_code for e in events} == {200}
        assert readyz(collector).status_code == 200

        collector.process.send_signal(signal.SIGTERM)
        unready = wait_until(lambda: _status(collector, 503), timeout=2, message="/readyz 503 at the signal")
        assert "shutting down" in unready.json()["reasons"]
        # Until the delay is over, everything else is served: the load balancer has time to notice.
        assert collector.http.get("/livez").status_code == 200
        late = event()
        assert collector.post_event(late).status_code == 200
        events.append(late)

        # Then the listener closes while the drain waits for OpenSearch: no probe gets a 200 any more.
        wait_until(lambda: _refused(collector), timeout=10, message="the listener closed")
        assert collector.process.poll() is None, "still draining"
        assert collector.process.wait(30) == 0
        assert collector.pending_rows() == len(events)
    finally:
        proxy.close()


def _status(collector, status: int) -> httpx.Response | None:
    response = readyz(collector)
    return response if response.status_code == status else None


def _refused(collector) -> bool:
    try:
        httpx.get(collector.url + "/readyz", timeout=1)
    except httpx.ConnectError:
        return True
    return False


def test_a_store_that_cannot_write_makes_it_unready_until_it_can_again(collector_factory, opensearch):
    # RLIMIT_FSIZE stands for a full disk: past 256 KB every write of the process's files fails.
    limit = 256 * 1024
    collector = collector_factory(rlimits={resource.RLIMIT_FSIZE: (limit, resource.RLIM_INFINITY)},
                                  ACK_MODE="durable")
    for _ in range(400):
        response = collector.post_event(event(param={"padding": "p" * 2000}))
        if response.status_code == 503:
            break
    assert response.status_code == 503, "the store never failed"
    unready = readyz(collector)
    assert unready.status_code == 503
    assert any("pending store failed" in reason for reason in unready.json()["reasons"]), unready.json()

    resource.prlimit(collector.process.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
    # Ready again on its own once the failure is some seconds old; then new events are kept.
    wait_until(lambda: readyz(collector).status_code == 200, timeout=30, message="ready again")
    assert collector.post_event(event()).status_code == 200
    assert readyz(collector).status_code == 200


def test_with_several_workers_each_answers_for_itself_and_all_turn_unready_at_the_signal(collector_factory):
    collector = collector_factory(SERVER_WORKERS=2, SHUTDOWN_DELAY_SECONDS=3, SHUTDOWN_GRACE_SECONDS=10)
    # Connections spread over the workers: fresh ones until both have answered.
    pids = set()
    wait_until(lambda: pids.add(httpx.get(collector.url + "/readyz", timeout=5).json()["pid"]) or len(pids) == 2,
               timeout=30, message="both workers answering /readyz")
    collector.process.send_signal(signal.SIGTERM)
    wait_until(lambda: _status(collector, 503), timeout=2, message="/readyz 503 at the signal")
    answers = [httpx.get(collector.url + "/readyz", timeout=5) for _ in range(20)]
    assert {answer.status_code for answer in answers} == {503}
    assert collector.process.wait(30) == 0
