"""A connection of api/protocol.py on a fake transport, with an app answering 200 "ok" to every request: for the
unit tests of the protocol (test_protocol.py) and of what it relies on of uvicorn (test_uvicorn_internals.py)."""

import asyncio
import functools

from uvicorn.config import Config
from uvicorn.server import ServerState

from event_collector.api.connection_limits import ConnectionLimits
from event_collector.api.protocol import CollectorHttpProtocol

HEAD_LIMIT = 1024
LIMITS = ConnectionLimits(max_header_line_bytes=512, max_header_bytes=HEAD_LIMIT, max_headers=10,
                          header_read_timeout_seconds=10.0, max_connections=100)


async def answer_ok(scope, receive, send):
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = self.write_side_shut = False

    def write(self, data: bytes) -> None:
        self.written += data

    def write_eof(self) -> None:
        self.write_side_shut = True

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name, default=None):
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def connection() -> tuple[CollectorHttpProtocol, FakeTransport]:
    config = Config(answer_ok, log_config=None, proxy_headers=False)
    config.load()
    made = functools.partial(CollectorHttpProtocol, limits=LIMITS)(config=config, server_state=ServerState(),
                                                                  app_state={})
    transport = FakeTransport()
    made.connection_made(transport)
    return made, transport


async def answered(transport: FakeTransport) -> bytes:
    for _ in range(100):
        if transport.written:
            return transport.written
        await asyncio.sleep(0)
    return transport.written
