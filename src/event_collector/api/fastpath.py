"""The single-event `POST /events` answered inside the HTTP protocol: no task, no ASGI messages.

api/fast_dispatch.py decides which requests take it (docs/http.md) and hands over a complete body; this
module runs them through the same pipeline as the app (api/pipeline.py) and calls back with the whole
answer. The usual request is kept by `Collector.accept_now`, with room in the buffer and, in durable mode, a
journal write that needs no fsync: the answer is written from within the data callback, no coroutine made.
Otherwise `Collector.accept`, a coroutine, is stepped here by hand rather than wrapped in a task: with
SQLITE_SYNCHRONOUS=FULL it waits for the group commit's future, and the next step runs from that future's
done callback.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any, Callable, Coroutine

from .. import metrics
from ..collecting import CREATED
from ..exceptions import StoreError
from .answers import Answer, store_failed_answer
from .app import CollectorApp
from .routes import EVENTS_PATH

log = logging.getLogger(__name__)

# Bodies declared larger than this are read by the ASGI app, which streams them.
MAX_FAST_BODY_BYTES = 64 * 1024

# uvicorn's answer to an app that failed: the same bytes here.
INTERNAL_ERROR = Answer(500, [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"21"),
                              (b"connection", b"close")], b"Internal Server Error")

Done = Callable[[Answer], None]


class Tally:
    """The fast path's counts, added to their Prometheus counters once per turn of the event loop rather
    than once per request: an increment costs more than the rest of a small request's bookkeeping (with
    several workers each one writes a shared file). The first answer of a turn schedules the flush, and the
    protocol flushes before any request the app answers, so /metrics never misses an earlier answer."""

    def __init__(self) -> None:
        self.answers = 0
        self.created = 0
        self.pending = 0
        # The loop a flush is scheduled on (None: none is): a loop closed before running it (tests run
        # several) must not keep the next one from scheduling its own.
        self._scheduled_on: asyncio.AbstractEventLoop | None = None

    def answered(self, loop: asyncio.AbstractEventLoop) -> None:
        """One answer written, on `loop` (the connection's: asking asyncio for the running loop costs more
        than the rest of this)."""
        self.answers += 1
        if self._scheduled_on is not loop:
            self._scheduled_on = loop
            loop.call_soon(self.flush)

    def kept(self, status: str) -> None:
        """One event kept, counted as answers.count_kept counts it; its answer schedules the flush."""
        if status == CREATED:
            self.created += 1
        else:
            self.pending += 1

    def flush(self) -> None:
        self._scheduled_on = None
        if self.answers:
            metrics.fast_path_answers.inc(self.answers)
            self.answers = 0
        if self.created:
            metrics.received_created.inc(self.created)
            self.created = 0
        if self.pending:
            metrics.received_pending.inc(self.pending)
            self.pending = 0


TALLY = Tally()


class FastIngest:
    """One per CollectorApp (`FastIngest.of(app)`): None when FAST_PATH is off or the access log is on (uvicorn
    writes that log line from its ASGI cycle)."""

    _of: "weakref.WeakKeyDictionary[CollectorApp, FastIngest]" = weakref.WeakKeyDictionary()

    def __init__(self, app: CollectorApp) -> None:
        self.pipeline = app.pipeline
        self.route = app.routes[EVENTS_PATH]
        self.collector = app.collector
        self.body_read_timeout_seconds = app.settings.body_read_timeout_seconds

    @classmethod
    def of(cls, app: Any) -> "FastIngest | None":
        # uvicorn may wrap the app in middleware that keeps it as `.app`.
        while not isinstance(app, CollectorApp) and hasattr(app, "app"):
            app = app.app
        if not isinstance(app, CollectorApp) or not app.settings.fast_path or app.settings.access_log:
            return None
        fast = cls._of.get(app)
        if fast is None:
            fast = cls._of[app] = cls(app)
        return fast

    def handle(self, headers: list[tuple[bytes, bytes]], head: dict[bytes, bytes], peer: Any, body: bytes,
               done: Done) -> None:
        """Answer one event through `done`: called before this returns unless the collector must wait. `head`
        is `headers` by name."""
        pipeline = self.pipeline
        request = pipeline.admit(self.route, {"client": peer, "headers": headers}, head)
        if isinstance(request, Answer):
            done(request)
            return
        refusal = pipeline.prepare(request, body)
        if refusal is not None:
            done(refusal)
            return

        def kept(status: Any, exc: BaseException | None) -> None:
            if exc is None:
                if request.envelopes:  # none when the rules dropped the event (docs/rules.md): not "created"
                    TALLY.kept(status)
                done(request.route.answer(request, status))
            elif isinstance(exc, StoreError):
                done(store_failed_answer(request.envelopes, exc))
            else:
                log.error("the fast path failed on an event", exc_info=exc)
                done(INTERNAL_ERROR)

        collector = self.collector
        try:
            status = collector.accept_now(request.envelopes)
        except Exception as exc:  # noqa: BLE001 - answered by `kept`, as from `accept`
            kept(None, exc)
            return
        if status is not None:
            kept(status, None)
        else:
            step(collector.accept(request.envelopes), kept)


def step(coroutine: Coroutine, finished: Callable[[Any, BaseException | None], None]) -> None:
    """Run `coroutine` to its end without a task: step it now, and again whenever the future it waits on
    is done; `finished(result, exception)` at the end."""
    try:
        awaited = coroutine.send(None)
    except StopIteration as stop:
        finished(stop.value, None)
        return
    except BaseException as exc:  # noqa: BLE001 - handed to `finished`, which answers for it
        finished(None, exc)
        return
    if awaited is None:
        # A bare yield (asyncio.sleep(0)): give the loop one turn.
        asyncio.get_running_loop().call_soon(step, coroutine, finished)
    else:
        # What a task does with an awaited future: take the "blocking" mark, resume once it is done.
        awaited._asyncio_future_blocking = False
        awaited.add_done_callback(lambda _: step(coroutine, finished))
