"""Tracking plans checked at the door (docs/rules.md): RULES_FILE says, per source, which events exist, the
JSON Schema of their properties, what happens to an event that breaks it (reject, quarantine, tag), and the
transforms (drop by name, bots, sampling, PII) applied before an event is kept.

errors.py: RulesError. transforms.py: a source's drop by name, bots, sampling and PII, compiled once.
bots.py: the bot check (ua-parser's spiders and a list of headless and HTTP-library markers). pii.py: the PII
paths and actions (hash, mask, drop).

Imports floors 0 to 2: exceptions, and enrich's ua-parser rules (shared, so the bot check loads none of its
own); hence floor 3.
"""
