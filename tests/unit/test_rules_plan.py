"""RULES_FILE read and checked (rules/plan.py, rules/book.py): each mistake named by its place in the file, the
version in force, typed properties and their conflicts, and the judge's stages (rules/judge.py) with a fake of
the transforms, which reach their edge cases here only (the real ones run in tests/integration)."""

from __future__ import annotations

import hashlib
import textwrap

import pytest

from event_collector.rules.book import SourceRules
from event_collector.rules.errors import RulesError
from event_collector.rules.judge import judge
from event_collector.rules.plan import parse_file

SHOP = textwrap.dedent("""\
    version: shop-1
    sources:
      events:
        unplanned: tag
        events:
          purchase:
            policy: reject
            properties:
              type: object
              required: [price, currency]
              properties:
                price: {type: number}
                quantity: {type: integer}
                currency: {type: string, enum: [EUR, USD]}
                paid_at: {type: string, format: date-time}
                gift: {type: boolean}
                a.b: {type: number}
          added_to_cart:
            policy: quarantine
            properties: {type: object, properties: {quantity: {type: integer}}, required: [quantity]}
    """)


def test_the_version_is_the_label_and_twelve_hex_of_the_files_sha256():
    parsed = parse_file(SHOP)
    assert parsed.version == "shop-1-" + hashlib.sha256(SHOP.encode()).hexdigest()[:12]
    assert parse_file(SHOP.replace("version: shop-1\n", "")).version.startswith("rules-")


@pytest.mark.parametrize("change, message", [
    (("policy: reject", "policy: rejekt"), "sources.events.events.purchase.policy: 'rejekt' is not one of"),
    (("unplanned: tag", "unplanned: maybe"), "sources.events.unplanned: 'maybe' is not one of allow, tag, reject"),
    (("    unplanned: tag", "    unplaned: tag"), "sources.events.unplaned: unknown key"),
    (("        policy: quarantine", "        polcy: quarantine"),
     "sources.events.events.added_to_cart.polcy: unknown key"),
    (("price: {type: number}", "price: {type: numbr}"), "sources.events.events.purchase.properties: not a valid JSON"),
    (("price: {type: number}", "price: {$ref: 'http://example.invalid/s.json'}"),
     "sources.events.events.purchase.properties.properties.price.$ref: 'http://example.invalid/s.json' points outside"),
    (("  events:\n    unplanned", "  Shop_Web:\n    unplanned"), "sources.Shop_Web: not a source name"),
    (("version: shop-1", "version: 'shop 1'"), "version: 'shop 1' is not a label"),
    (("sources:", "sourcez:"), "the file.sourcez: unknown key"),
])
def test_a_mistake_is_named_by_its_place_in_the_file(change, message):
    with pytest.raises(RulesError) as refused:
        parse_file(SHOP.replace(*change, 1))
    assert message in str(refused.value)


def test_not_yaml_is_said_so():
    with pytest.raises(RulesError, match="not YAML"):
        parse_file("sources: [")


def test_typed_properties_map_each_type_and_skip_names_that_would_nest():
    typed = parse_file(SHOP).plans["events"].typed
    assert {name: field.type for name, field in typed.items()} == {
        "price": "double", "quantity": "long", "currency": "keyword", "paid_at": "date", "gift": "boolean"}


def test_two_events_of_a_source_typing_a_property_apart_are_refused():
    conflicting = SHOP.replace("properties: {quantity: {type: integer}}", "properties: {quantity: {type: string}}")
    with pytest.raises(RulesError) as refused:
        parse_file(conflicting)
    assert "sources.events.events.added_to_cart.properties.properties.quantity: typed as string" in str(refused.value)
    assert "event 'purchase' of the same source types it as integer" in str(refused.value)


class FakeTransforms:
    """The transforms' interface (rules/transforms.py), with decisions set by the test."""

    def __init__(self, bots="off", drop=(), bot_agents=(), sampled_out=(), scrub=None):
        self.bots, self._drop, self._bot_agents, self._out = bots, set(drop), set(bot_agents), set(sampled_out)
        self._scrub = scrub or (lambda properties: dict(properties))

    def dropped_by_name(self, name):
        return name in self._drop

    def is_bot(self, agent):
        return agent in self._bot_agents

    def sampled_out(self, name, log_id):
        return log_id in self._out

    def scrub(self, properties):
        return self._scrub(properties)


def rules(transforms=None) -> SourceRules:
    return SourceRules(parse_file(SHOP).plans["events"], transforms or FakeTransforms())


GOOD = {"price": 9.5, "quantity": 2, "currency": "EUR", "paid_at": "2026-12-04T10:00:00Z", "note": "x"}


def test_a_valid_event_is_kept_with_its_typed_copies():
    verdict = judge(rules(), "purchase", GOOD, "param", None, "id-1")
    assert verdict.outcome == "kept" and not verdict.violations
    assert verdict.typed == {"price": 9.5, "quantity": 2, "currency": "EUR", "paid_at": "2026-12-04T10:00:00Z"}


def test_reject_names_the_event_the_path_and_the_rule():
    verdict = judge(rules(), "purchase", {**GOOD, "price": "9.5"}, "param", None, "id-1")
    assert verdict.outcome == "rejected"
    assert verdict.field == "param.price"
    assert "event 'purchase'" in verdict.reason and "param.price" in verdict.reason and "(rule type)" in verdict.reason


def test_a_missing_property_is_named_by_its_path():
    verdict = judge(rules(), "purchase", {"price": 1}, "properties", None, "id-1")
    assert verdict.field == "properties.currency" and "(rule required)" in verdict.reason


def test_quarantine_lists_the_violations_and_copies_nothing_typed():
    verdict = judge(rules(), "added_to_cart", {"quantity": "two"}, "param", None, "id-1")
    assert verdict.outcome == "quarantined"
    assert verdict.violations == ["param.quantity: type"]
    assert verdict.typed is None


def test_an_unplanned_event_is_tagged_and_a_tagged_event_copies_only_its_sound_values():
    unplanned = judge(rules(), "refund", {"price": 1}, "param", None, "id-1")
    assert (unplanned.outcome, unplanned.violations, unplanned.typed) == ("tagged", ["event: unplanned"], None)
    tag_plan = SourceRules(parse_file(SHOP.replace("policy: reject", "policy: tag")).plans["events"], FakeTransforms())
    tagged = judge(tag_plan, "purchase", {**GOOD, "price": "9.5", "quantity": 1.5}, "param", None, "id-1")
    assert tagged.outcome == "tagged"
    assert sorted(tagged.violations) == ["param.price: type", "param.quantity: type"]
    assert tagged.typed == {"currency": "EUR", "paid_at": "2026-12-04T10:00:00Z"}


def test_the_stages_run_in_order_drop_bots_sampling_plan_pii():
    assert judge(rules(FakeTransforms(drop={"purchase"}, sampled_out={"id-1"})), "purchase", {}, "param", None,
                 "id-1").outcome == "dropped"
    assert judge(rules(FakeTransforms(bots="drop", bot_agents={"bot"}, sampled_out={"id-1"})), "purchase", {},
                 "param", "bot", "id-1").outcome == "bot_dropped"
    flagged = judge(rules(FakeTransforms(bots="flag", bot_agents={"bot"})), "purchase", GOOD, "param", "bot", "id-1")
    assert flagged.outcome == "kept" and flagged.bot
    # Sampling before the plan: an invalid event sampled out is not rejected.
    assert judge(rules(FakeTransforms(sampled_out={"id-1"})), "purchase", {}, "param", None,
                 "id-1").outcome == "sampled_out"
    # PII after the plan: the plan sees the value as sent, the index the scrubbed one, typed copies too.
    scrubbed = judge(rules(FakeTransforms(scrub=lambda p: {**p, "currency": "h(EUR)"})), "purchase", GOOD, "param",
                     None, "id-1")
    assert scrubbed.outcome == "kept"
    assert scrubbed.properties["currency"] == scrubbed.typed["currency"] == "h(EUR)"
    assert GOOD["currency"] == "EUR"


def test_a_hostile_event_is_judged_within_bounds_and_copies_nothing_typed():
    tag_plan = SourceRules(parse_file(SHOP.replace("policy: reject", "policy: tag")
                                      .replace("gift: {type: boolean}", "gift: {type: array, items: {type: integer}}"))
                           .plans["events"], FakeTransforms())
    verdict = judge(tag_plan, "purchase", {**GOOD, "gift": ["x"] * 10_000}, "param", None, "id-1")
    assert verdict.outcome == "tagged" and len(verdict.violations) == 10
    assert verdict.typed is None  # past the bound, no value is told sound


def test_a_new_plan_retyping_a_field_in_force_is_named():
    from event_collector.rules.book import RuleBook
    from event_collector.rules.cluster import retyped_fields

    in_force = RuleBook("shop-1-a", {"events": rules()})
    retyped = RuleBook("shop-2-b", {"events": SourceRules(
        parse_file(SHOP.replace("gift: {type: boolean}", "gift: {type: string}")).plans["events"], FakeTransforms())})
    [change] = retyped_fields(retyped, in_force)
    assert change.startswith("sources.events: field typed.gift is boolean in the rules in force (version shop-1-a); "
                             "the plan makes it keyword")
    assert retyped_fields(in_force, in_force) == []
