"""Tracking plans checked at the door (docs/rules.md): RULES_FILE says, per source, which events exist, the
JSON Schema of their properties, what happens to an event that breaks it (reject, quarantine, tag), and the
transforms (drop by name, bots, sampling, PII) applied before an event is kept.

errors.py: RulesError. plan.py: the file read and checked, its schemas compiled once. typed.py: the typed
copies of planned properties and their mappings. book.py: one reading of the file, and the reading in force.
judge.py: an event's verdict, stage by stage. cluster.py: a plan held against the live indices' mappings.
transforms.py: a source's drop by name, bots, sampling and PII, compiled once. bots.py: the bot check
(ua-parser's spiders and a list of headless and HTTP-library markers). pii.py: the PII paths and actions
(hash, mask, drop).

Imports floors 0 to 2: exceptions, logs, metrics, watched_file, and enrich's ua-parser rules (shared, so the
bot check loads none of its own); hence floor 3.
"""
