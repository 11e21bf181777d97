"""The nodes of one OpenSearch cluster: which to send the next request to, and which to leave alone a while.

Requests go round-robin over the live nodes. A node that refused, reset or did not answer is set aside
for a back-off (`retry.backoff_seconds`: 1 s doubling to 60 s, with jitter) and tried again once it has
passed, so a node that comes back gets traffic again without anyone looking. While every node is set
aside, a request still goes to the one whose back-off ends first: the breaker (`retry.Breaker`) paces
those probes, as it does for a single node.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterator

from .. import metrics
from ..retry import Backoff
from .connection import Node

log = logging.getLogger(__name__)


class _NodeState:
    def __init__(self, node: Node, backoff: Backoff) -> None:
        self.node = node
        self.backoff = backoff
        self.aside_until = 0.0
        # When it was last set aside: a request sent before then failed for the same reason, and must not
        # lengthen the back-off again (ten senders lose one node at once).
        self.aside_since = float("-inf")
        self.reason = ""


class NodePool:
    def __init__(self, nodes: list[Node], base_seconds: float = 1.0, max_seconds: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._states = [_NodeState(node, Backoff(base_seconds, max_seconds)) for node in nodes]
        self._clock = clock
        self._turn = 0

    @property
    def nodes(self) -> list[Node]:
        return [state.node for state in self._states]

    def live(self) -> list[Node]:
        now = self._clock()
        return [state.node for state in self._states if state.aside_until <= now]

    def candidates(self) -> Iterator[Node]:
        """The nodes one request may try, in order: every live node once, starting with the next in turn;
        when none is live, only the one whose back-off ends first."""
        now = self._clock()
        start = self._turn
        self._turn = (self._turn + 1) % len(self._states)
        rotated = self._states[start:] + self._states[:start]
        live = [state for state in rotated if state.aside_until <= now]
        for state in live or [min(self._states, key=lambda state: state.aside_until)]:
            yield state.node

    def set_aside(self, node: Node, reason: str, request_started: float) -> None:
        state = self._state(node)
        metrics.opensearch_node_failures.labels(node.label).inc()
        if request_started < state.aside_since:
            return
        delay = state.backoff.next_delay()
        state.aside_since = self._clock()
        state.aside_until = state.aside_since + delay
        state.reason = reason
        log.warning("OpenSearch node %s set aside for %.1f s: %s", node.label, delay, reason)

    def answered(self, node: Node) -> None:
        state = self._state(node)
        if state.backoff.failures:
            log.info("OpenSearch node %s answers again (it was set aside: %s)", node.label, state.reason)
            state.backoff.reset()
            state.aside_until = 0.0
            state.aside_since = float("-inf")

    def now(self) -> float:
        return self._clock()

    def _state(self, node: Node) -> _NodeState:
        return next(state for state in self._states if state.node is node)
