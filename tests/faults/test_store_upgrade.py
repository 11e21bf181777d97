"""A store written by the previous version (schema 2: rows in flight leased in `pending`) left by a process
that was killed: the new collector migrates it on open and delivers every row exactly once."""

import sqlite3
import time
import uuid

import msgspec

from event_collector.envelope import index_name
from event_collector.pending import schema
from support import assert_delivered_exactly_once, wait_until, write_store_of_schema_2

_DEAD_OWNER = "0123456789abcdef0123456789abcdef"


def make_store_of_schema_2(path, environment: str, in_flight: list[str], waiting: list[str]) -> None:
    """As schema 2's durable mode left it: `in_flight` leased to a dead process, `waiting` due for a retry."""
    now = time.time()
    index = index_name(environment, now)
    rows = [(log_id, index, msgspec.json.encode({"log_id": log_id, "page": "/home", "event": "upgrade"}), now, 0,
             now, _DEAD_OWNER, None) for log_id in in_flight]
    rows += [(log_id, index, msgspec.json.encode({"log_id": log_id, "page": "/home", "event": "upgrade"}), now, 1,
              now, None, "503") for log_id in waiting]
    write_store_of_schema_2(path, rows)


def test_a_store_of_the_previous_schema_is_migrated_and_every_row_delivered(collector_factory, opensearch, tmp_path):
    environment = "upgrade" + uuid.uuid4().hex[:10]
    database = tmp_path / "previous.db"
    in_flight = [f"flying-{uuid.uuid4().hex}" for _ in range(300)]
    waiting = [f"waiting-{uuid.uuid4().hex}" for _ in range(200)]
    make_store_of_schema_2(database, environment, in_flight, waiting)

    collector = collector_factory(DATABASE=database, SERVER_ENVIRONMENT=environment, ACK_MODE="durable")
    assert_delivered_exactly_once("a store of schema 2 after a crash", in_flight + waiting, opensearch, environment,
                                  fault="store_upkeep", ack_mode="durable", settings=collector.report_settings())
    wait_until(lambda: collector.pending_rows() == 0, timeout=60, message="the store to empty")
    with sqlite3.connect(database) as connection:
        assert connection.execute("PRAGMA user_version").fetchone() == (schema.SCHEMA_VERSION,)
