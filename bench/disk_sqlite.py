"""Where durable mode's disk bytes go, SQLite alone: `.venv/bin/python bench/disk_sqlite.py`.

Not part of `make bench` nor of CI. Writes 7,000 events of ~600 bytes one commit each (what 350 events/s
amounts to: a group commit carries about one), deletes them in bulks of 35 as a sender would, and prints
the bytes the process caused to be written (/proc/self/io write_bytes) per event, for the store's current
schema (rows in flight in `in_flight`) at several page sizes, and for schema 2 (rows in flight leased in
`pending`). The files go next to this script's checkout (a disk, not tmpfs) and are removed.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
from event_collector.pending import schema  # noqa: E402

EVENTS = 7_000
DELETE_EVERY = 35
OWNER = "0123456789abcdef0123456789abcdef"
DOCUMENT = (b'{"log_id":"%d","user_id":"bench-user","event_info":{"page":"/home","event":"click",'
            b'"param":{"price":1200,"currency":"KRW"}},"received_at":"2026-11-28T13:30:00.000Z",'
            b'"client_ip":"127.0.0.1","pad":"' + b"x" * 300 + b'"}')


def written() -> int:
    return int(re.search(r"^write_bytes: (\d+)", Path("/proc/self/io").read_text(), re.M).group(1))


def connect(path: Path, page_size: int, version: int) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute(f"PRAGMA page_size = {page_size}")
    connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute("BEGIN IMMEDIATE")
    for script in schema._MIGRATIONS[:version]:
        schema._run_script(connection, script)
    connection.execute("COMMIT")
    return connection


def bytes_per_event(page_size: int, version: int) -> float:
    directory = Path(tempfile.mkdtemp(dir=REPO, prefix=".disk-sqlite-"))
    try:
        connection = connect(directory / "pending.db", page_size, version)
        table = "in_flight" if version >= 3 else "pending"
        insert = ("INSERT INTO in_flight (log_id, index_name, document, received_at, owner) VALUES (?, 'i', ?, ?, ?)"
                  if version >= 3 else
                  "INSERT INTO pending (log_id, index_name, document, received_at, next_attempt_at, lease_owner)"
                  " VALUES (?, 'i', ?, ?, 0, ?)")
        start, held = written(), []
        for n in range(EVENTS):
            connection.execute("BEGIN IMMEDIATE")
            connection.execute(insert, (str(n), DOCUMENT % n, time.time(), OWNER))
            held.append(connection.execute("SELECT last_insert_rowid()").fetchone())
            connection.execute("COMMIT")
            if len(held) == DELETE_EVERY:
                connection.execute("BEGIN IMMEDIATE")
                connection.executemany(f"DELETE FROM {table} WHERE id = ?", held)
                connection.execute("COMMIT")
                held = []
        connection.close()
        return (written() - start) / EVENTS
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main() -> int:
    print(f"schema 2, 4096-byte pages: {bytes_per_event(4096, 2):,.0f} bytes per event", flush=True)
    for page_size in (4096, 2048, 1024, 512):
        print(f"schema {schema.SCHEMA_VERSION}, {page_size}-byte pages: {bytes_per_event(page_size, 3):,.0f} bytes "
              "per event", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
