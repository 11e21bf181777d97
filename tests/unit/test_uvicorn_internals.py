"""What the connection protocol (api/protocol.py, fast_dispatch.py, closing.py) relies on of uvicorn's and
httptools' internals, as listed in docs/http.md: these tests fail when an upgrade changes any of it, and when
the code starts relying on something the list does not name. After an upgrade, read the changes of
uvicorn/protocols/http/httptools_impl.py against the list, then update REVIEWED."""

import ast
import asyncio
import collections
import functools
import importlib.metadata
import inspect
import socket
import tomllib
from pathlib import Path

import httptools
import pytest
import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from event_collector.api import closing, fast_dispatch, protocol
from event_collector.api.protocol import CollectorHttpProtocol
from fake_connection import LIMITS, answer_ok, answered, connection

# The versions the list below was checked against; pyproject.toml pins them.
REVIEWED = {"uvicorn": "0.54.0", "httptools": "0.9.0"}

# HttpToolsProtocol's methods the protocol overrides, with their parameters.
OVERRIDDEN = {
    "__init__": ["self", "config", "server_state", "app_state", "_loop"],
    "connection_made": ["self", "transport"],
    "connection_lost": ["self", "exc"],
    "shutdown": ["self"],
    "data_received": ["self", "data"],
    "on_message_begin": ["self"],
    "on_header": ["self", "name", "value"],
    "on_headers_complete": ["self"],
    "on_body": ["self", "body"],
    "on_message_complete": ["self"],
    "on_response_complete": ["self"],
    "_start_asgi_task": ["self", "cycle", "app"],
}
# Its methods the protocol calls without overriding them; on_url stays the parser's callback.
CALLED = {
    "send_400_response": ["self", "msg"],
    "_should_upgrade": ["self"],
    "handle_websocket_upgrade": ["self"],
    "_unsupported_upgrade_warning": ["self"],
    "on_url": ["self", "url"],
}
# The attributes uvicorn sets that the protocol reads, and those it sets for uvicorn to read.
READ = {"app", "app_state", "asgi_version", "client", "connections", "cycle", "flow", "headers", "loop", "parser",
        "pipeline", "root_path", "scheme", "server", "server_state", "url"}
WRITTEN = {"expect_100_continue", "headers", "scope", "url"}
# Never touched, but relied on: uvicorn's cycle writes through `transport` (our LingeringTransport), and its
# keep-alive timer must stay unarmed (the protocol's sweep bounds idle connections instead).
UNTOUCHED = {"transport", "timeout_keep_alive_task"}
PARSER_METHODS = ["feed_data", "should_keep_alive", "should_upgrade", "get_method", "get_http_version"]
CYCLE_ATTRIBUTES = ["response_complete", "more_body", "message_event", "keep_alive"]
FLOW_METHODS = ["pause_reading", "resume_reading"]
SERVER_STATE_ATTRIBUTES = ["total_requests", "default_headers", "connections"]

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL_MODULES = [protocol, fast_dispatch, closing]


def uvicorns_protocol() -> HttpToolsProtocol:
    """uvicorn's own protocol, as uvicorn makes it, once its connection is made and a request begins (within
    a running loop, as uvicorn makes it)."""
    config = Config(answer_ok, log_config=None, proxy_headers=False)
    config.load()
    made = HttpToolsProtocol(config=config, server_state=ServerState(), app_state={"key": "value"})
    made.connection_made(asyncio.Transport())
    made.on_message_begin()
    return made


def test_the_pinned_versions_are_the_reviewed_ones():
    pins = dict(line.split("==") for line in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
                ["dependencies"] if line.split("==")[0] in REVIEWED)
    installed = {name: importlib.metadata.version(name) for name in REVIEWED}
    assert pins == installed == REVIEWED, "a new uvicorn or httptools: check docs/http.md's list, then REVIEWED"


@pytest.mark.parametrize("name, parameters", [*OVERRIDDEN.items(), *CALLED.items()])
def test_each_method_exists_with_its_parameters(name, parameters):
    method = getattr(HttpToolsProtocol, name)
    assert list(inspect.signature(method).parameters) == parameters


def test_the_overridden_methods_are_the_listed_ones():
    ours = CollectorHttpProtocol.__mro__[:CollectorHttpProtocol.__mro__.index(HttpToolsProtocol)]
    overridden = {name for cls in ours for name, value in vars(cls).items()
                  if inspect.isfunction(value) and hasattr(HttpToolsProtocol, name)}
    assert overridden == set(OVERRIDDEN)


async def test_what_the_code_touches_of_uvicorns_is_what_the_lists_name():
    """Every `self.<name>` in the protocol's modules that is uvicorn's must be in a list above."""
    uvicorns = set(dir(HttpToolsProtocol)) | set(vars(uvicorns_protocol()))
    read, written = set(), set()
    for module in PROTOCOL_MODULES:
        for node in ast.walk(ast.parse(Path(module.__file__).read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
                (written if isinstance(node.ctx, ast.Store) else read).add(node.attr)
    assert read & uvicorns == READ | (set(OVERRIDDEN) | set(CALLED)) & read
    assert written & uvicorns == WRITTEN


async def test_uvicorn_sets_the_attributes_and_gives_the_objects_the_protocol_uses():
    made = uvicorns_protocol()
    for name in READ | WRITTEN | UNTOUCHED:
        assert hasattr(made, name), name
    for name in PARSER_METHODS:
        assert callable(getattr(made.parser, name)), name
    for name in FLOW_METHODS:
        assert callable(getattr(made.flow, name)), name
    for name in SERVER_STATE_ATTRIBUTES:
        assert hasattr(made.server_state, name), name
    assert made.connections is made.server_state.connections and made in made.connections
    assert isinstance(made.pipeline, collections.deque)
    assert STATUS_LINE[200] == b"HTTP/1.1 200 OK\r\n"


async def test_the_scope_built_for_the_app_is_the_one_uvicorn_builds_as_a_request_begins():
    made, _ = connection()
    made.app_state.update(key="value")
    made.on_message_begin()
    assert made._new_scope() == uvicorns_protocol().scope | {"client": made.client, "server": made.server}


async def test_uvicorns_request_cycle_has_what_the_protocol_reads_and_its_keep_alive_timer_stays_unarmed():
    made, transport = connection()
    made.data_received(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await answered(transport)).startswith(b"HTTP/1.1 200")
    for name in CYCLE_ATTRIBUTES:
        assert hasattr(made.cycle, name), name
    assert made.cycle.response_complete and made.timeout_keep_alive_task is None


def test_an_exception_in_a_parser_callback_stops_feed_data_with_httptools_parser_error():
    """How a head over a limit stops the parser (protocol.RequestRefused)."""

    class Stopping:
        def on_headers_complete(self):
            raise protocol.RequestRefused("over a limit")

    with pytest.raises(httptools.HttpParserError):
        httptools.HttpRequestParser(Stopping()).feed_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")


async def test_uvicorn_replaces_its_default_headers_when_the_date_changes_rather_than_changing_them():
    """The fast path's 200s are encoded once per default-headers list (api/wire.py)."""
    server = uvicorn.Server(Config(answer_ok, log_config=None))
    server.config.load()
    await server.on_tick(0)
    first = server.server_state.default_headers
    await server.on_tick(10)
    assert server.server_state.default_headers is not first and first[0][0] == b"date"


async def test_uvicorns_server_makes_the_protocol_from_the_http_setting_and_shuts_each_connection_down():
    """What cli.py does: `http=functools.partial(CollectorHttpProtocol, limits=...)`; at a stop, uvicorn calls
    `shutdown()` on every connection it counts in `server_state.connections`."""
    shut_down = []

    class Recording(CollectorHttpProtocol):
        def shutdown(self) -> None:
            shut_down.append(self)
            super().shutdown()

    config = Config(answer_ok, http=functools.partial(Recording, limits=LIMITS), lifespan="off", log_config=None)
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    listener = socket.create_server(("127.0.0.1", 0))
    await server.startup(sockets=[listener])
    reader, writer = await asyncio.open_connection(*listener.getsockname())
    for _ in range(100):
        if server.server_state.connections:
            break
        await asyncio.sleep(0.01)
    [made] = server.server_state.connections
    assert isinstance(made, Recording) and made.limits is LIMITS
    await asyncio.wait_for(server.shutdown(sockets=[listener]), 5)
    assert shut_down == [made] and await reader.read() == b""
    writer.close()
