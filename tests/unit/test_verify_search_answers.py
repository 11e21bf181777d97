"""How verify reads OpenSearch's search answers (opensearch_check.read_page): shard failures that pass and
those that never will, and answers that are not OpenSearch's."""

import pytest

from event_collector.exceptions import CheckUnavailable
from event_collector.verify.asking import PollResult
from event_collector.verify.opensearch_check import read_page

TEXT_LOG_ID = {"type": "illegal_argument_exception", "reason": "Text fields are not optimised for operations ..."}


def answer(buckets, failures=(), total=4, after=None):
    page = {"buckets": buckets, **({"after_key": after} if after else {})}
    return {"_shards": {"total": total, "successful": total - len(failures), "failed": len(failures),
                        "failures": list(failures)}, "aggregations": {"ids": page}}


def bucket(log_id, count=1):
    return {"key": {"id": log_id}, "doc_count": count}


def test_documents_are_counted_per_id_and_the_next_page_is_named():
    result = PollResult()
    buckets, after = read_page(answer([bucket("a"), bucket("b", 3)], after={"id": "b"}), result)
    assert result.documents == {"a": 1, "b": 3} and after == {"id": "b"} and len(buckets) == 2


def test_no_index_yet_is_an_empty_page():
    result = PollResult()
    assert read_page({"_shards": {"total": 0, "failed": 0}}, result) == ([], None)
    assert result.documents == {}


def test_every_shard_of_an_index_without_the_template_is_named_and_the_rest_counted():
    failures = [{"shard": n, "index": "events_old_2025-1", "reason": TEXT_LOG_ID} for n in range(2)]
    result = PollResult()
    read_page(answer([bucket("a")], failures), result)
    assert result.documents == {"a": 1} and result.unsearchable == {"events_old_2025-1"}


def test_failures_of_one_index_listed_once_for_several_shards_are_still_that_index():
    grouped = answer([bucket("a")], [{"shard": 0, "index": "events_old_2025-1", "reason": TEXT_LOG_ID}])
    grouped["_shards"]["failed"] = 3  # three shards of it failed; OpenSearch groups them into one line
    result = PollResult()
    read_page(grouped, result)
    assert result.documents == {"a": 1} and result.unsearchable == {"events_old_2025-1"}


def test_a_shard_that_did_not_answer_makes_the_page_unusable():
    failures = [{"shard": 0, "index": "events_old_2025-1", "reason": TEXT_LOG_ID},
                {"shard": 1, "index": "events_x_2026-12", "reason": {"type": "no_shard_available_action_exception"}}]
    with pytest.raises(CheckUnavailable, match="2 of 4 shards did not answer"):
        read_page(answer([bucket("a")], failures), PollResult())
    # OpenSearch may count failures it does not list: they are not taken for permanent ones.
    with pytest.raises(CheckUnavailable):
        read_page({"_shards": {"total": 4, "failed": 1, "failures": []}}, PollResult())


@pytest.mark.parametrize("malformed", [{"aggregations": {"ids": {"buckets": [{"doc_count": 1}]}}},
                                       {"aggregations": {"ids": {"buckets": [{"key": {"id": "a"}, "doc_count": "x"}]}}},
                                       {"aggregations": {"ids": "no"}}])
def test_an_answer_that_is_not_a_composite_aggregation_raises(malformed):
    with pytest.raises((AttributeError, KeyError, TypeError, ValueError)):
        read_page(malformed, PollResult())
