"""A refused event's reason class (outcomes.dead_letter_class): from the `type` of OpenSearch's error, never its
free text, and always one of the few classes /metrics exports."""

import pytest

from event_collector import metrics
from event_collector.envelope import Envelope
from event_collector.outcomes import dead_letter_class
from event_collector.shipper.bulk import classify


@pytest.mark.parametrize("error_type, status, expected", [
    ("mapper_parsing_exception", 400, "mapping"),
    ("strict_dynamic_mapping_exception", 400, "mapping"),
    ("illegal_argument_exception", 400, "mapping"),  # "mapper [x] cannot be changed", "Limit of total fields"
    ("mapper_something_new_exception", 400, "mapping"),
    ("max_bytes_length_exceeded_exception", 400, "too_large"),
    ("anything", 413, "too_large"),
    ("x_content_parse_exception", 400, "invalid"),
    ("action_request_validation_exception", 400, "invalid"),
    ("version_conflict_engine_exception", 409, "version_conflict"),
    ("index_closed_exception", 400, "other"),
    (None, 400, "other"),
    ({"not": "a string"}, 400, "other"),
])
def test_each_error_type_has_its_class(error_type, status, expected):
    assert dead_letter_class(error_type, status) == expected
    assert expected in metrics.DEAD_LETTER_REASON_CLASSES


def test_classify_gives_each_rejected_event_the_class_of_its_own_error():
    batch = [Envelope("i", f"id-{n}", b"{}", 0.0) for n in range(3)]
    items = [{"create": {"status": 400, "error": {"type": "mapper_parsing_exception", "reason": "failed to parse"}}},
             {"create": {"status": 201}},
             {"create": {"status": 400, "error": {"type": "x_content_parse_exception", "reason": "[1:2] bad"}}}]
    outcome = classify(batch, 200, {"items": items})
    assert [(f.envelope.log_id, f.reason_class) for f in outcome.rejected] == [("id-0", "mapping"),
                                                                                 ("id-2", "invalid")]
    assert "failed to parse" in outcome.rejected[0].reason  # the free text stays in the dead letter, not the label
