"""The HTTP ceiling: the same server and options as the collector, with a handler that only reads the
body and answers 200. `make bench` measures it under the same load as the collector."""

from __future__ import annotations

_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"20")]
_BODY = b'{"status":"created"}'


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    more_body = True
    while more_body:
        more_body = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})
