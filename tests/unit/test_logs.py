import logging

from event_collector.logs import RepeatFilter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(message: str, *args: object, level: int = logging.ERROR, name: str = "event_collector.x"):
    return logging.LogRecord(name, level, __file__, 1, message, args, None)


def test_a_repeated_record_passes_once_per_interval_and_then_says_how_many_were_dropped():
    clock = Clock()
    repeats = RepeatFilter(interval_seconds=10, clock=clock)
    assert repeats.filter(record("store failed for %d events", 1))
    assert not any(repeats.filter(record("store failed for %d events", n)) for n in range(500))
    clock.now = 10.5
    again = record("store failed for %d events", 7)
    assert repeats.filter(again)
    assert again.getMessage() == "store failed for 7 events [500 more like this in the last 10 s]"


def test_different_messages_levels_and_loggers_are_counted_apart():
    repeats = RepeatFilter(interval_seconds=10, clock=Clock())
    assert repeats.filter(record("a"))
    assert repeats.filter(record("b"))
    assert repeats.filter(record("a", level=logging.WARNING))
    assert repeats.filter(record("a", name="event_collector.y"))
    assert not repeats.filter(record("a"))


def test_critical_records_always_pass():
    repeats = RepeatFilter(interval_seconds=10, clock=Clock())
    assert all(repeats.filter(record("LOST %d events", 5, level=logging.CRITICAL)) for _ in range(3))


def test_query_strings_are_redacted_from_access_log_lines():
    from event_collector.logs import QueryRedactingFilter

    line = record('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "POST", "/events/beacon?token=a.b.c&x=1", "1.1", 204,
                  name="uvicorn.access")
    assert QueryRedactingFilter().filter(line)
    assert line.getMessage() == '127.0.0.1:5000 - "POST /events/beacon?[redacted] HTTP/1.1" 204'
    plain = record('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "POST", "/events", "1.1", 200)
    assert QueryRedactingFilter().filter(plain)
    assert plain.getMessage() == '127.0.0.1:5000 - "POST /events HTTP/1.1" 200'
# -- formats and redaction ------------------------------------------------------------------------------

import json  # noqa: E402
import logging.config  # noqa: E402

from event_collector.logs import JsonFormatter, Redactor, TextFormatter, log_config  # noqa: E402

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJl"


def test_a_json_line_has_time_level_logger_message_and_the_extra_fields():
    line = JsonFormatter().format(logging.LogRecord("event_collector.x", logging.WARNING, __file__, 1,
                                                    "stored %d events", (3,), None))
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["level"] == "WARNING" and entry["logger"] == "event_collector.x"
    assert entry["message"] == "stored 3 events"
    assert entry["time"].endswith("Z") and entry["time"][10] == "T"
    with_extra = record("x")
    with_extra.events = 7
    assert json.loads(JsonFormatter().format(with_extra))["events"] == 7


def test_a_traceback_stays_on_the_one_json_line():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter().format(failed)
    assert line.count("\n") == 0
    assert "ValueError: boom" in json.loads(line)["exception"]


def test_uvicorn_access_records_become_fields():
    access = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "GET", "/ping", "1.1", 200), None)
    entry = json.loads(JsonFormatter().format(access))
    assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/ping", 200)


def test_secrets_tokens_and_credentials_are_redacted_in_both_formats():
    redact = Redactor(["the-jwt-secret", "hunter22"])
    text = redact(f"secret the-jwt-secret, password hunter22, token {JWT}, Authorization: Bearer abc.def-ghi "
                  "Basic b3A6cHc= url https://admin:pw@node:9200/_bulk")
    for leaked in ("the-jwt-secret", "hunter22", JWT, "abc.def-ghi", "b3A6cHc=", ":pw@"):
        assert leaked not in text, (leaked, text)
    assert "https://admin:[redacted]@node:9200" in text
    secret_record = record("token %s with key %s", JWT, "the-jwt-secret")
    for formatter in (JsonFormatter(["the-jwt-secret"]), TextFormatter(["the-jwt-secret"])):
        line = formatter.format(secret_record)
        assert JWT not in line and "the-jwt-secret" not in line


def test_short_secret_values_and_prose_are_left_alone():
    assert Redactor(["ab"])("ab cab") == "ab cab"
    assert Redactor()("basic checks passed; bearer of news") == "basic checks passed; bearer of news"


def test_the_repeat_limit_works_in_the_json_format(capsys):
    logging.config.dictConfig(log_config("json", "INFO", []))
    try:
        logger = logging.getLogger("event_collector.repeated")
        for n in range(50):
            logger.error("store failed for %d events", n)
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
        assert [line["message"] for line in lines] == ["store failed for 0 events"]
        logging.getLogger("uvicorn.error").info("uvicorn speaks")
        assert json.loads(capsys.readouterr().err)["logger"] == "uvicorn.error"
    finally:
        # Leave no handler writing to this test's captured stream.
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False, "root": {"handlers": []},
                                   "loggers": {name: {"handlers": [], "propagate": True}
                                               for name in ("uvicorn", "uvicorn.access")}})


def test_every_access_line_is_written_none_held_back_as_a_repeat(capsys):
    import logging.config

    from event_collector.logs import log_config

    logging.config.dictConfig(log_config("json", "INFO", []))
    access = logging.getLogger("uvicorn.access")
    for n in range(5):
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "POST", f"/events/beacon?token=t{n}", "1.1", 204)
    lines = [line for line in capsys.readouterr().err.splitlines() if "uvicorn.access" in line]
    assert len(lines) == 5 and all("?[redacted]" in line for line in lines)
