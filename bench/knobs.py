"""The bench's settings: the environment knobs, read once at import, and its fixed paths and constants.

Importing it also puts this checkout's `src` first on sys.path, so the modules that import it before
`event_collector` measure this checkout's code.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
PYTHON = sys.executable
SECRET = "bench-secret-" + "b" * 40
OPENSEARCH = os.environ.get("OPEN_SEARCH_DNS", "http://127.0.0.1:9200").rstrip("/")
SECONDS = int(os.environ.get("BENCH_SECONDS", "20"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
E2E_EVENTS = int(os.environ.get("BENCH_E2E_EVENTS", "500000"))
# Resolved here: the servers run in a work directory of their own, where a relative path means nothing.
SEED_BIN = str(Path(os.environ["SEED_BIN"]).resolve()) if os.environ.get("SEED_BIN") else ""
DELIVERY_RATE = float(os.environ.get("BENCH_DELIVERY_RATE", "2000"))
# The rate of the disk figure: the moderate load at which durable mode's bytes per event were first measured.
DISK_RATE = 350.0
CONNECTIONS = 64
SERVER_CPU, LOAD_CPU = "0", "1"
MODES = ("memory", "durable")
# BENCH_ONLY=kafka: single[kafka] and end_to_end[kafka] alone, printed and not written to results (a check on a shared machine).
# BENCH_ONLY=http: the pinned one-worker figures alone (limit_http, single[seed], single[memory|durable]), written.
ONLY = os.environ.get("BENCH_ONLY", "")
# BENCH_KAFKA=0: leave out the Kafka figures (they start a broker of their own, which takes minutes).
KAFKA = os.environ.get("BENCH_KAFKA", "1") != "0"

sys.path.insert(0, str(REPO / "src"))
