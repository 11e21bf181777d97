"""The fast path's true HTTP ceiling: an asyncio protocol on uvloop that parses with httptools (as the
collector's fast path does) and answers every request with a fixed 200, skipping ASGI altogether.
`python bench/limit_raw.py PORT`; `make bench` measures it as limit_http[raw], next to the bare uvicorn app
(limit_app.py, limit_http[uvicorn])."""

from __future__ import annotations

import asyncio
import sys

import httptools
import uvloop

_ANSWER = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 20\r\n\r\n"
           b'{"status":"created"}')


class AnswerEveryRequest(asyncio.Protocol):
    """Reads each request whole (headers and body through the parser) and writes the fixed answer."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_complete(self) -> None:
        self.transport.write(_ANSWER)


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(AnswerEveryRequest, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
