"""Two collector replicas, each with its own store, behind haproxy: one is killed with kill -9 under load
and restarted on its store. Clients resend what got no answer, as `log_id` makes that harmless."""

import signal
import threading
import time

import httpx

from support import (CollectorProcess, Haproxy, assert_delivered_exactly_once, event, metric,
                     unique_environment, wait_until)

# Answers after which the same event is sent again: no answer at all, or one that says nothing was kept
# (503 with Retry-After; 502/504 from the balancer when a replica died holding the request). A 2xx or a
# 4xx is final.
_RESEND_STATUSES = frozenset({502, 503, 504})


class ResendingLoad:
    """Clients in threads sending new events through `url` until stopped. An event without a final answer
    is sent again with the same log_id until it gets one: a resend of an event that was in fact kept is
    answered 2xx again and indexed once (`_id = log_id`)."""

    def __init__(self, url: str, headers: dict[str, str], clients: int = 3) -> None:
        self.url = url
        self.headers = headers
        self.accepted: list[str] = []
        self.sent = 0
        self.resent = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def __enter__(self) -> "ResendingLoad":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(60)

    def _client(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10, headers=self.headers) as http:
            while not self._stopping.is_set():
                sent = event()
                with self._lock:
                    self.sent += 1
                # Once started, an event is seen through to its final answer, even while stopping.
                while True:
                    try:
                        status = http.post("/events", json=sent).status_code
                    except httpx.HTTPError:
                        status = None
                    if status is not None and status not in _RESEND_STATUSES:
                        break
                    with self._lock:
                        self.resent += 1
                    time.sleep(0.05)  # a client's back-off before it resends, not a wait for a condition
                if status == 200:
                    with self._lock:
                        self.accepted.append(sent["log_id"])


def test_kill_9_of_one_replica_behind_haproxy_loses_and_duplicates_nothing(tmp_path, opensearch):
    environment = unique_environment()
    replicas = [CollectorProcess(tmp_path, SERVER_ENVIRONMENT=environment, DATABASE=tmp_path / f"replica-{n}.db",
                                 ACK_MODE="durable") for n in range(2)]
    balancer = None
    try:
        for replica in replicas:
            replica.start()
        balancer = Haproxy(tmp_path, [replica.port for replica in replicas]).start()
        victim, survivor = replicas
        with ResendingLoad(balancer.url, victim.auth()) as load:
            wait_until(lambda: len(load.accepted) >= 400, timeout=60, message="load before the kill")
            assert metric(victim, "event_collector_events_received_total", outcome="created") > 0
            victim.process.send_signal(signal.SIGKILL)
            victim.process.wait(30)
            after_kill = len(load.accepted)
            wait_until(lambda: len(load.accepted) >= after_kill + 400, timeout=60, message="load on one replica")
            victim.http = httpx.Client(base_url=victim.url, timeout=30)
            victim.start()  # on its own store: what it had acknowledged is replayed from there
            wait_until(lambda: metric(victim, "event_collector_events_received_total", outcome="created") > 0,
                       timeout=60, message="the restarted replica taking events again")
            after_restart = len(load.accepted)
            wait_until(lambda: len(load.accepted) >= after_restart + 400, timeout=60, message="load on both again")
        print(f"sent {load.sent}, resent {load.resent} times, accepted {len(load.accepted)}")
        assert len(set(load.accepted)) == len(load.accepted)
        assert_delivered_exactly_once("kill -9 of one of two replicas behind haproxy", load.accepted, opensearch,
                                      environment, sent=load.sent)
        for replica in replicas:
            wait_until(lambda: replica.pending_rows() == 0, timeout=60, message="every store emptied")
    finally:
        if balancer is not None:
            balancer.stop()
        for replica in replicas:
            if replica.process is not None and replica.process.poll() is None:
                replica.stop()
