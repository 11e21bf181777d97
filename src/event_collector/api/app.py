"""The HTTP API as a bare ASGI application: no framework on the hot path.

Routes: GET /ping, POST /events, POST /events/batch, POST /events/beacon (api/routes.py, each run through the
one ingest pipeline: api/pipeline.py), the tracking API (api/tracking_routes.py), POST /v1/receipts
(api/receipts_route.py), GET /metrics, GET /livez and GET /readyz (probes.py); OPTIONS on the POST routes
when CORS is on (api/cors.py). The lifespan protocol starts and stops the Collector, so
whatever serves this app (uvicorn here) drives the pipeline's lifecycle.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .. import metrics
from ..collecting import CREATED
from ..exceptions import InvalidEvent, StoreError
from ..lifecycle import Collector
from ..modes import AnyCollector, open_collector
from ..receipts import Receipts
from ..rules.book import Rules
from ..settings import Settings
from ..sources import Sources
from . import probes
from .answers import (Answer, Send, answer, count_kept, late_body_answer, plain_answer, refusal_answer, refused,
                      send_answer, store_failed_answer, unavailable_answer)
from .auth import TokenVerifier
from .body import ClientDisconnected, Receive, read_body
from .config_files import ConfigFiles
from .cors import CorsPolicy, is_preflight
from .deadlines import BodyReadDeadlines
from .keys import KeyRing
from .pipeline import IngestPipeline, Route
from .receipts_route import RECEIPTS_PATH, ReceiptsRoute
from .routes import ingest_routes
from .rules_gate import RulesGate
from .tracking_routes import WriteKey, tracking_routes

log = logging.getLogger(__name__)

# Routes that only read, answering GET and HEAD.
_READ_ROUTES = frozenset({b"/ping", b"/metrics", b"/livez", b"/readyz"})


class CollectorApp:
    def __init__(self, settings: Settings, collector: AnyCollector | None = None) -> None:
        self.settings = settings
        self.collector = collector or open_collector(settings)
        self.sources = Sources(settings.sources_file, settings.server_environment)
        # Without JWT_SECRET nor JWT_JWKS_FILE (a collector of sources alone) the JWT API answers 401.
        self.routes = tracking_routes(self.sources)
        # Routes a source's write key may call: their CORS is the sources' (and CORS_ALLOWED_ORIGINS').
        self._tracking_paths = frozenset(self.routes) | {RECEIPTS_PATH}
        self._tracking_cors: tuple[object, CorsPolicy | None] = (None, None)
        verifier = TokenVerifier(KeyRing.from_settings(settings))
        self.routes |= ingest_routes(settings, verifier)
        # In ACK_MODE=kafka this process keeps nothing: receipts come from OpenSearch alone.
        if isinstance(self.collector, Collector):
            self.receipts = Receipts(settings, self.collector.client, self.collector.store, self.collector.book)
        else:
            self.receipts = Receipts(settings, None, None, None)
        self.receipts_route = ReceiptsRoute(settings, verifier, WriteKey(self.sources), self.receipts)
        self.pipeline = IngestPipeline(settings)
        # RULES_FILE (docs/rules.md): a bad file stops the start, as a bad setting does.
        self.rules = Rules(settings.rules_file, settings.rules_hash_key) if settings.rules_file else None
        if self.rules is not None:
            self.pipeline.rules_gate = RulesGate(self.rules)
        self.config_files = ConfigFiles(self.sources, self.rules, self.collector, settings.server_environment)
        self.cors = CorsPolicy.from_setting(settings.cors_allowed_origins)
        self.deadlines = BodyReadDeadlines(settings.body_read_timeout_seconds)
        self._sweeper: asyncio.Task | None = None
        self._sources_watch: asyncio.Task | None = None

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.collector.start()
                except Exception as exc:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                try:
                    await self.config_files.start(self.settings.server_workers)
                except Exception as exc:
                    log.error("start-up failed: %s", exc)
                    await self.collector.stop()
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                self._sweeper = asyncio.create_task(self.deadlines.sweep(), name="body-deadlines")
                self._sources_watch = asyncio.create_task(self.config_files.watch(), name="config-files-watch")
                self.collector.watch_stop_signals()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for task in (self._sweeper, self._sources_watch):
                    if task is not None:
                        task.cancel()
                await self.collector.stop()
                await self.receipts.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        # Route on the path as sent: "/events%2Fbatch" is not "/events/batch".
        path, method = scope.get("raw_path") or scope["path"].encode(), scope["method"]
        route = self.routes.get(path)
        if route is not None or path == RECEIPTS_PATH:
            cors = self.cors if path not in self._tracking_paths else self._sources_cors()
            if cors is not None:
                origin = cors.allowed_origin(scope["headers"])
                if method == "OPTIONS":
                    await send_answer(send, self._preflight(cors, scope, origin))
                    return
                if origin is not None:
                    send = cors.answering(send, origin)
            if method != "POST":
                allowed = b"POST" if cors is None else b"POST, OPTIONS"
                await send_answer(send, answer(405, {"error": "use POST"}, [(b"allow", allowed)]))
            elif not self.collector.accepting:
                await send_answer(send, unavailable_answer("the collector is shutting down"))
            elif route is None:
                await self.receipts_route(scope, receive, send, self.deadlines)
            else:
                await self._ingest(scope, receive, send, route)
        elif path in _READ_ROUTES:
            if method not in ("GET", "HEAD"):
                # uvicorn sends no body for HEAD: the answer's headers are those GET would have.
                await send_answer(send, answer(405, {"error": "use GET or HEAD"}, [(b"allow", b"GET, HEAD")]))
            else:
                await send_answer(send, self._read(path))
        else:
            await send_answer(send, answer(404, {"error": f"no route for {method} {scope['path']}"}))

    def _read(self, path: bytes) -> Answer:
        if path == b"/ping":
            return plain_answer(200, b"pong", [(b"content-type", b"text/plain")])
        if path == b"/livez":
            return answer(200, probes.liveness())
        if path == b"/readyz":
            ready, report = probes.readiness(self.collector)
            if self.rules is not None:
                report["rules"] = {"version": self.rules.book.version}
            return answer(200 if ready else 503, report)
        page, content_type = metrics.exposition()
        return plain_answer(200, page, [(b"content-type", content_type.encode())])

    def _sources_cors(self) -> CorsPolicy | None:
        """The tracking API's CORS: the origins any source allows (each request is then held to its own
        source's, api/tracking_routes.py), and CORS_ALLOWED_ORIGINS' too. Made again when the sources are."""
        book, policy = self._tracking_cors
        if book is not self.sources.book:
            origins = [o for source in self.sources.book.sources.values() for o in source.allowed_origins]
            policy = CorsPolicy.from_setting(",".join([*origins, self.settings.cors_allowed_origins]))
            self._tracking_cors = (self.sources.book, policy)
        return policy

    def _preflight(self, cors: CorsPolicy, scope: dict[str, Any], origin: bytes | None) -> Answer:
        if origin is None:
            # No CORS header: the browser reports the preflight as failed and sends nothing.
            return answer(403, {"error": "this origin is not in CORS_ALLOWED_ORIGINS (nor, on the tracking API, "
                                         "in a source's allowed_origins)"})
        if not is_preflight(scope["headers"]):
            return answer(400, {"error": "OPTIONS is answered only as a CORS preflight "
                                         "(with Origin and Access-Control-Request-Method)"})
        return Answer(204, cors.preflight_headers(origin), b"")

    async def _ingest(self, scope: dict[str, Any], receive: Receive, send: Send, route: Route) -> None:
        """The pipeline (api/pipeline.py), with the body read and the events kept by awaiting."""
        pipeline = self.pipeline
        request = pipeline.admit(route, scope)
        if isinstance(request, Answer):
            await send_answer(send, request)
            return
        try:
            body = await read_body(receive, request.headers, self.settings.max_body_bytes, self.deadlines)
        except InvalidEvent as exc:
            await send_answer(send, refusal_answer(exc))
            return
        except TimeoutError:
            await send_answer(send, late_body_answer())
            return
        except ClientDisconnected:
            # Nothing is kept, and there is no one left to answer.
            refused("aborted")
            return
        refusal = pipeline.prepare(request, body)
        if refusal is not None:
            await send_answer(send, refusal)
            return
        envelopes = request.envelopes
        try:
            status = await self.collector.accept(envelopes) if envelopes else CREATED
        except StoreError as exc:
            await send_answer(send, store_failed_answer(envelopes, exc))
            return
        count_kept(status, envelopes, request.rejected)
        await send_answer(send, route.answer(request, status))


def create_app() -> CollectorApp:
    """The app of one of several worker processes (uvicorn's factory): settings from the environment, its
    slot's share of the buffer and shippers; the worker in slot 0 also runs the store's janitor."""
    import os

    from ..metrics import MULTIPROCESS_DIR_VARIABLE
    from ..settings import load_settings
    from ..worker_slots import claim_slot

    settings = load_settings()
    slot = claim_slot(os.environ[MULTIPROCESS_DIR_VARIABLE], settings.server_workers)
    share = settings.for_one_worker(slot)
    return CollectorApp(share, open_collector(share, runs_janitor=slot == 0))
