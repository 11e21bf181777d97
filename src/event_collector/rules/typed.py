"""Typed properties: a plan's declared property types copied beside the free-form properties as real fields,
`typed.<property>`, so that they can be summed, averaged and ranged (a flat_object's values are all strings).

| JSON Schema                                   | OpenSearch field                 |
|-----------------------------------------------|----------------------------------|
| `type: number`                                | double                           |
| `type: integer`                               | long                             |
| `type: boolean`                               | boolean                          |
| `type: string, format: date-time` or `date`   | date                             |
| other `type: string`                          | keyword (values over 1024 chars not indexed) |

Only a property with one `type` is typed, and only when its name holds no "." (which would nest). A value
is copied only when the event's validation found nothing wrong at or under it, and the numeric and date
fields ignore a malformed value besides (`ignore_malformed`): a value that slipped through can cost its
typed copy, never the document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Names that stay one field: no "." (a path), nothing OpenSearch reads specially.
_TYPED_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")
_MAPPINGS = {
    "number": {"type": "double", "ignore_malformed": True},
    "integer": {"type": "long", "ignore_malformed": True},
    "boolean": {"type": "boolean"},
    "date": {"type": "date", "format": "strict_date_optional_time||epoch_millis", "ignore_malformed": True},
    "string": {"type": "keyword", "ignore_above": 1024},
}
_SCALARS = (str, int, float, bool)
# The field under which the copies go, in the document and the template.
TYPED_FIELD = "typed"


@dataclass(frozen=True)
class TypedField:
    kind: str  # a key of _MAPPINGS
    event: str  # the first event that declared it (for messages)

    @property
    def mapping(self) -> dict[str, Any]:
        return _MAPPINGS[self.kind]

    @property
    def type(self) -> str:
        return self.mapping["type"]


def typed_fields(schema: dict[str, Any], event: str) -> dict[str, TypedField]:
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return {}
    typed = {}
    for name, subschema in properties.items():
        if not isinstance(subschema, dict) or not isinstance(name, str) or not _TYPED_NAME.match(name):
            continue
        kind = subschema.get("type")
        if kind == "string" and subschema.get("format") in ("date-time", "date"):
            kind = "date"
        if isinstance(kind, str) and kind in _MAPPINGS:
            typed[name] = TypedField(kind, event)
    return typed


def typed_mapping(typed: dict[str, TypedField]) -> dict[str, Any]:
    """The template's `typed` object for a source's typed properties."""
    return {TYPED_FIELD: {"properties": {name: field.mapping for name, field in sorted(typed.items())}}}


def typed_copy(typed: dict[str, TypedField], properties: dict[str, Any] | None,
               broken: frozenset[str]) -> dict[str, Any] | None:
    """The values to copy: the planned ones present, not null, and not among the `broken` (the properties a
    violation was found at or under)."""
    if not properties or not typed:
        return None
    # Scalars only, whatever the schema said: an object in a keyword field would cost the whole document.
    copy = {name: value for name in typed
            if name not in broken and type(value := properties.get(name)) in _SCALARS}
    return copy or None
