import pytest

from event_collector.exceptions import ConfigError
from event_collector.settings import cgroup_cpu_quota, load_settings


def load(**environ: str):
    return load_settings(environ, env_file=None)


@pytest.mark.parametrize(("name", "value"), [
    ("BODY_READ_TIMEOUT_SECONDS", "0"),
    ("MAX_DELIVERY_ATTEMPTS", "0"),
    ("FLUSH_INTERVAL_SECONDS", "nan"),
    ("RETRY_BACKOFF_BASE_SECONDS", "nan"),
    ("PENDING_RETENTION_DAYS", "-1"),
    ("SHUTDOWN_GRACE_SECONDS", "inf"),
    ("RATE_LIMIT_PER_USER", "nan"),
    ("QUEUE_CAPACITY", "ten"),
    ("SERVER_PORT", "70000"),
    ("ACK_MODE", "fast"),
    ("SQLITE_SYNCHRONOUS", "OFF"),
    ("SERVER_ENVIRONMENT", "Prod"),
    ("SERVER_ENVIRONMENT", "a b"),
    ("SERVER_ENVIRONMENT", "_hidden"),
    ("SERVER_ENVIRONMENT", "\u00c9a"),
    ("SERVER_ENVIRONMENT", "\u00e9" * 64),
    ("SERVER_ENVIRONMENT", "prod:eu"),
    ("HEADER_READ_TIMEOUT_SECONDS", "0"),
])
def test_a_setting_that_would_break_the_process_stops_start_up_naming_the_variable(name, value):
    with pytest.raises(ConfigError, match=f"^{name}="):
        load(**{name: value})


def test_valid_values_are_read_with_their_types():
    settings = load(QUEUE_CAPACITY="50", FLUSH_INTERVAL_SECONDS="0.5", SQLITE_SYNCHRONOUS="full",
                    SERVER_ENVIRONMENT="prod-eu_1", ACK_MODE="memory")
    assert (settings.queue_capacity, settings.flush_interval_seconds) == (50, 0.5)
    assert (settings.sqlite_synchronous, settings.server_environment, settings.ack_mode) == ("FULL", "prod-eu_1",
                                                                                           "memory")


def test_the_longest_backoff_may_not_be_below_the_first():
    with pytest.raises(ConfigError, match="RETRY_BACKOFF_MAX_SECONDS"):
        load(RETRY_BACKOFF_BASE_SECONDS="10", RETRY_BACKOFF_MAX_SECONDS="5")


@pytest.mark.parametrize(("total", "workers"), [(10, 3), (100_000, 7), (10, 10), (1000, 1)])
def test_worker_shares_add_up_to_the_totals(total, workers):
    settings = load(SERVER_WORKERS=str(workers), BULK_WORKERS=str(total), QUEUE_CAPACITY=str(total))
    shares = [settings.for_one_worker(slot) for slot in range(workers)]
    assert sum(s.bulk_workers for s in shares) == total
    assert sum(s.queue_capacity for s in shares) == total
    assert max(s.bulk_workers for s in shares) - min(s.bulk_workers for s in shares) <= 1


def test_every_worker_gets_one_shipper_even_when_there_are_fewer_than_workers():
    settings = load(SERVER_WORKERS="64", BULK_WORKERS="10")
    assert [settings.for_one_worker(slot).bulk_workers for slot in (0, 9, 10, 63)] == [1, 1, 1, 1]


def test_the_cgroup_cpu_quota_is_read_from_v2_or_v1(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(tmp_path) is None


@pytest.mark.parametrize(("name", "value"), [
    ("TRUSTED_PROXIES", "10.0.0.0/8, not-a-network"),
    ("TRUSTED_PROXY_HEADER", "x-real-ip"),
    ("IP_ANONYMIZE", "hash"),
    ("ENRICH_USER_AGENT", "maybe"),
    ("TEST_CLOCK_OFFSET_SECONDS", "nan"),
])
def test_bad_enrichment_settings_stop_start_up_naming_the_variable(name, value):
    with pytest.raises(ConfigError, match=f"^{name}="):
        load(**{name: value})


@pytest.mark.parametrize(("name", "value"), [("LOG_FORMAT", "xml"), ("LOG_LEVEL", "loud"),
                                             ("SHUTDOWN_DELAY_SECONDS", "-1")])
def test_log_and_stop_delay_settings_are_checked(name, value):
    with pytest.raises(ConfigError, match=f"^{name}="):
        load(**{name: value})


def test_enrichment_settings_are_read():
    settings = load(TRUSTED_PROXIES="10.0.0.0/8 192.168.1.1", TRUSTED_PROXY_HEADER="Forwarded", IP_ANONYMIZE="MASK",
                    ENRICH_USER_AGENT="true", GEOIP_DATABASE="/var/lib/geoip/city.mmdb")
    assert (settings.trusted_proxy_header, settings.ip_anonymize, settings.enrich_user_agent) == ("forwarded", "mask",
                                                                                                 True)
    defaults = load()
    assert (defaults.trusted_proxies, defaults.ip_anonymize, defaults.enrich_user_agent, defaults.geoip_database) \
        == ("", "off", False, "")


def test_log_settings_are_read_in_any_case_and_the_format_defaults_to_the_terminal_s_choice():
    assert (load().log_format, load().log_level) == (None, "INFO")
    settings = load(LOG_FORMAT="JSON", LOG_LEVEL="debug")
    assert (settings.log_format, settings.log_level) == ("json", "DEBUG")


def test_the_stop_delay_must_leave_part_of_the_stop_budget_to_the_drain():
    assert load(SHUTDOWN_DELAY_SECONDS="5", SHUTDOWN_GRACE_SECONDS="30").shutdown_delay_seconds == 5
    with pytest.raises(ConfigError, match="SHUTDOWN_DELAY_SECONDS must be below SHUTDOWN_GRACE_SECONDS"):
        load(SHUTDOWN_DELAY_SECONDS="30", SHUTDOWN_GRACE_SECONDS="30")
