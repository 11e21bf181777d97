"""verify's pacing, latency percentiles and command line, without any server."""

import pytest

from event_collector.cli import main
from event_collector.verify import pacing
from event_collector.verify.pacing import Pacer
from event_collector.verify.report import percentile
from event_collector.verify.sender import retry_after_seconds
from support import Clock

TOKEN = "header.payload.signature"


def test_the_pacer_spaces_sends_at_the_rate_from_the_first():
    clock = Clock(100.0)
    pacer = Pacer(50, clock)
    assert [pacer.next_due() for _ in range(4)] == pytest.approx([100.0, 100.02, 100.04, 100.06])


def test_answers_that_come_late_do_not_slow_the_schedule_within_its_slack():
    clock = Clock(0.0)
    pacer = Pacer(100, clock)
    pacer.next_due()
    clock.now = 0.05  # the loop was busy for 5 sends' worth: still within the slack, so they are made up
    assert [pacer.next_due() for _ in range(5)] == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.05])


def test_a_stall_moves_the_schedule_instead_of_bursting_to_catch_up():
    clock = Clock(0.0)
    pacer = Pacer(1000, clock)
    pacer.next_due()
    clock.now = 5.0  # stalled for 5 s: 5,000 sends behind
    due = [pacer.next_due() for _ in range(1000)]
    overdue = [t for t in due if t <= clock.now]
    assert len(overdue) == 1  # only the next one is sent at once, not a burst of 5,000
    assert due[1:] == pytest.approx([5.0 + n / 1000 for n in range(1, 1000)])


async def test_waiting_on_the_pacer_sends_no_faster_than_the_rate(monkeypatch):
    clock = Clock(0.0)
    sends = []

    async def fake_sleep(seconds):
        clock.now += seconds

    monkeypatch.setattr(pacing.asyncio, "sleep", fake_sleep)
    pacer = Pacer(200, clock)
    for _ in range(1000):
        await pacer.wait()
        sends.append(clock.now)
    assert sends[-1] == pytest.approx(999 / 200)
    assert min(b - a for a, b in zip(sends, sends[1:])) == pytest.approx(1 / 200)


def test_the_rate_must_be_positive():
    with pytest.raises(ValueError):
        Pacer(0)


def test_percentiles_are_nearest_rank():
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile(values, 99) == 99.0
    assert percentile(list(reversed(values)), 99) == 99.0
    assert percentile([3.0], 50) == percentile([3.0], 99) == 3.0
    assert percentile([1.0, 10.0], 50) == 1.0 and percentile([1.0, 10.0], 95) == 10.0
    assert percentile([], 50) is None


@pytest.mark.parametrize("value, seconds", [("3", 3.0), ("0.5", 0.5), ("-4", 0.0), ("99999", 30.0),
                                            ("nan", None), ("inf", None), ("Wed, 21 Oct 2026 07:28:00 GMT", None),
                                            (None, None)])
def test_retry_after_is_bounded_and_only_seconds(value, seconds):
    assert retry_after_seconds(value) == seconds


def verify_error(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit:
        main(["verify", *argv])
    assert exit.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("url", ["collector.example.com", "ftp://collector.example.com", "http://",
                                 "https://collector.example.com/?x=1", "http://host:99999", "http://[::1"])
def test_a_bad_url_is_a_usage_error(capsys, url):
    assert "not an http(s) URL" in verify_error(capsys, url, "--token", TOKEN)


def test_no_credentials_is_a_usage_error(capsys):
    assert "one of the arguments --token --write-key is required" in verify_error(capsys, "http://127.0.0.1:3000")


def test_both_credentials_is_a_usage_error(capsys):
    error = verify_error(capsys, "http://127.0.0.1:3000", "--token", TOKEN, "--write-key", "wk")
    assert "not allowed with argument" in error


@pytest.mark.parametrize("option, value", [("--events", "0"), ("--events", "2000000"), ("--rate", "0"),
                                           ("--rate", "fast"), ("--deadline", "-1"), ("--retries", "-1")])
def test_numbers_out_of_bounds_are_usage_errors(capsys, option, value):
    assert f"argument {option}" in verify_error(capsys, "http://127.0.0.1:3000", "--token", TOKEN, option, value)


def test_opensearch_options_need_opensearch(capsys):
    error = verify_error(capsys, "http://127.0.0.1:3000", "--token", TOKEN, "--index-pattern", "logs_*")
    assert "need --opensearch" in error


def test_opensearch_credentials_are_given_once(capsys):
    error = verify_error(capsys, "http://127.0.0.1:3000", "--token", TOKEN, "--opensearch",
                         "https://admin:pw@search:9200", "--opensearch-user", "admin", "--opensearch-password", "x")
    assert "credentials once" in error
    error = verify_error(capsys, "http://127.0.0.1:3000", "--token", TOKEN, "--opensearch", "https://search:9200",
                         "--opensearch-user", "admin")
    assert "go together" in error


def test_an_empty_token_is_a_usage_error(capsys):
    assert "--token is empty" in verify_error(capsys, "http://127.0.0.1:3000", "--token", " ")


def test_the_opensearch_urls_user_info_becomes_basic_auth():
    import argparse

    from event_collector.verify.arguments import add_verify_parser, plan_from

    commands = argparse.ArgumentParser().add_subparsers()
    parser = add_verify_parser(commands)
    args = parser.parse_args(["https://collector.example.com/", "--write-key", "wk",
                              "--opensearch", "https://ad%40min:p%3Ass@search.example.com:9200/"])
    plan = plan_from(args, parser.error)
    assert plan.url == "https://collector.example.com" and plan.route == "/v1/track"
    assert plan.opensearch == "https://search.example.com:9200"
    assert plan.opensearch_auth == ("ad@min", "p:ss")
    assert plan.index_pattern == "events_*" and plan.verify_tls


def test_a_collector_that_does_not_listen_is_reported_as_cannot_check(capsys):
    from support import free_port

    code = main(["verify", f"http://127.0.0.1:{free_port()}", "--token", TOKEN, "--events", "3", "--rate", "100",
                 "--deadline", "0.1", "--poll-interval", "0.05"])
    out = capsys.readouterr().out
    assert code == 2
    assert "CANNOT CHECK: no event was answered 2xx" in out and "ClientConnectorError ×3" in out


def verdict_of(seen_options: dict, acknowledged: int = 2, found: int = 2):
    import argparse

    from event_collector.verify.arguments import add_verify_parser, plan_from
    from event_collector.verify.report import Observations, figures
    from event_collector.verify.sender import Ledger

    parser = add_verify_parser(argparse.ArgumentParser().add_subparsers())
    verify_plan = plan_from(parser.parse_args(["http://collector", "--token", TOKEN, "--opensearch", "http://os"]),
                            parser.error)
    ledger = Ledger("r")
    for n in range(2):
        ledger.record(ledger.new_event(), 200 if n < acknowledged else 503, at=0.0)
    ledger.started_at = ledger.finished_at = 0.0
    ids = [f"verify-r-{n}" for n in range(found)]
    seen = Observations("OpenSearch", True, first_found=dict.fromkeys(ids, 1.0), documents=dict.fromkeys(ids, 1),
                        **seen_options)
    result = figures(verify_plan, ledger, seen)
    return result.exit_code, result.verdict


def test_every_2xx_found_once_passes():
    assert verdict_of({"polls": 3}) == (0, "PASS: all 2 events answered 2xx are indexed, each exactly once")


def test_a_2xx_not_found_by_a_check_that_answered_is_lost():
    code, verdict = verdict_of({"polls": 3}, found=1)
    assert code == 1 and verdict.startswith("FAIL: 1 of 2 events answered 2xx were not indexed")


def test_not_found_while_the_last_check_failed_is_not_called_lost():
    code, verdict = verdict_of({"polls": 3, "failed_polls": 1, "last_poll_failed": True,
                                "last_poll_error": "OpenSearch answered 503"}, found=1)
    assert code == 2 and "the last check failed (OpenSearch answered 503)" in verdict


def test_a_check_that_never_answered_cannot_pass():
    code, verdict = verdict_of({"polls": 4, "failed_polls": 4, "last_poll_failed": True, "last_poll_error": "x"},
                               found=0)
    assert code == 2 and verdict.startswith("CANNOT CHECK: no check answered")


def test_nothing_answered_2xx_cannot_pass():
    assert verdict_of({"polls": 1}, acknowledged=0, found=0)[0] == 2
