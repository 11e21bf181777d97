"""The HTTP door: everything between a client's bytes and `Collector.accept`. The connection protocol
(protocol.py, with connection_limits.py, fast_dispatch.py, closing.py and wire.py) holds each connection to its
limits and answers the single-event fast path itself (fastpath.py); the ASGI app (app.py) routes the rest;
both run every ingest request through one pipeline (pipeline.py, its routes in routes.py: auth.py and keys.py
for credentials, body.py, validation.py, batch.py and beacon.py for bodies, ratelimit.py, answers.py), beside
cors.py, deadlines.py and probes.py; receipts_route.py answers POST /v1/receipts from receipts.py. api is the
top of the house with cli.py: it may import collecting, modes, receipts, lifecycle (for types and readiness
only), envelope, enrich, settings, metrics, exceptions and logs (and worker_slots, for the worker process's
share in app.create_app); nothing below api may import it.
"""
