"""BULK_MAX_BYTES and BULK_ADAPTIVE_CONCURRENCY: read, checked, and reaching the buffer and the batcher."""

import pytest

from event_collector.exceptions import ConfigError
from event_collector.lifecycle import Collector
from event_collector.settings import load_settings


def load(**environ: str):
    return load_settings(environ, env_file=None)


@pytest.mark.parametrize("value", ["0", "1000", "65535", "lots"])
def test_a_bulk_byte_cap_below_64_kib_or_not_a_number_stops_start_up(value):
    with pytest.raises(ConfigError, match="^BULK_MAX_BYTES="):
        load(BULK_MAX_BYTES=value)


def test_the_collector_cuts_batches_at_bulk_max_bytes(tmp_path):
    settings = load(BULK_MAX_BYTES=str(64 * 1024), BULK_SIZE="1000", DATABASE_URL=f"sqlite://{tmp_path}/p.db")
    collector = Collector(settings)
    assert collector.buffer.batch_max_bytes == 64 * 1024


def test_by_default_5_mib_and_an_adaptive_limit_that_starts_at_one_bulk(tmp_path):
    settings = load(BULK_WORKERS="6", DATABASE_URL=f"sqlite://{tmp_path}/p.db")
    assert settings.bulk_max_bytes == 5 * 1024 * 1024
    collector = Collector(settings)
    assert collector.batcher.concurrency.adaptive
    assert (collector.batcher.concurrency.limit, collector.batcher.concurrency.maximum) == (1, 6)


def test_fixed_concurrency_lets_every_sender_send(tmp_path):
    settings = load(BULK_WORKERS="6", BULK_ADAPTIVE_CONCURRENCY="false", DATABASE_URL=f"sqlite://{tmp_path}/p.db")
    assert Collector(settings).batcher.concurrency.limit == 6
