"""What every collector shares, whatever its ack mode: the answers `accept` gives, and how a stop signal is
handled (lifecycle.Collector keeps events in this process; kafka/collector.KafkaCollector hands them to Kafka).

A stop has one budget, SHUTDOWN_GRACE_SECONDS, counted from the stop signal; SHUTDOWN_DELAY_SECONDS
first keeps serving while /readyz answers 503, so that a load balancer takes the replica out before its
listener closes.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Callable

from .settings import Settings

log = logging.getLogger(__name__)

# What `accept` answers: every event buffered, or some kept in the pending store for later.
CREATED = "created"
PENDING = "pending"


class StopSignals:
    """The stop-signal handling of a collector: /readyz reads `stopping`, the stop reads `grace_left`."""

    settings: Settings
    started: bool
    accepting: bool

    def __init__(self) -> None:
        self._stop_requested_at: float | None = None

    @property
    def stopping(self) -> bool:
        """A stop signal came or the stop began: /readyz answers 503 from that moment on."""
        return self._stop_requested_at is not None or (self.started and not self.accepting)

    def watch_stop_signals(self) -> None:
        """Note when a stop signal arrives, so that the whole stop keeps within SHUTDOWN_GRACE_SECONDS.

        Called from the server's start-up, when its own handlers are in place: ours note the time and
        hand the signal on to them, after SHUTDOWN_DELAY_SECONDS for the first one: meanwhile everything
        is served as before but /readyz answers 503, so that a load balancer takes this replica out
        before its listener closes (clients then see no refused connections).
        """
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            handler = signal.getsignal(stop_signal)
            if callable(handler):
                signal.signal(stop_signal, self._noting_stop(handler))

    def _noting_stop(self, handler: Callable) -> Callable:
        def note_and_pass_on(signum: int, frame: object) -> None:
            delay = self.settings.shutdown_delay_seconds
            if self._stop_requested_at is None:
                self._stop_requested_at = time.monotonic()
                if delay > 0:
                    log.info("stop signal: /readyz answers 503; still serving for %.0f s (SHUTDOWN_DELAY_SECONDS)",
                             delay)
                    # The server's handler only sets flags, so a timer thread may call it.
                    timer = threading.Timer(delay, handler, (signum, None))
                    timer.daemon = True
                    timer.start()
                    return
            handler(signum, frame)  # a second signal is passed on at once (a second Ctrl-C forces the exit)

        return note_and_pass_on

    def grace_left(self) -> float:
        """Seconds left of SHUTDOWN_GRACE_SECONDS, counted from the stop signal (or from now, without one)."""
        started = self._stop_requested_at or time.monotonic()
        return max(0.0, self.settings.shutdown_grace_seconds - (time.monotonic() - started))
