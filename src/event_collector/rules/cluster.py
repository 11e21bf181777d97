"""A plan held against the mappings of the indices that exist: a typed property an index already maps as
another type would have OpenSearch refuse every document of that source (and a mapping cannot be changed in
place), so such a plan is refused at load, naming the field, its old type and its new one."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from ..exceptions import OpenSearchUnavailable
from .book import RuleBook
from .typed import TYPED_FIELD

# An OpenSearch client's `request(method, path)`: (status, parsed body). The shipper's client, or the CLI's.
Request = Callable[..., Awaitable[tuple[int, Any]]]


async def mapping_conflicts(book: RuleBook, request: Request, family_of: Callable[[str], str]) -> list[str]:
    """Every typed property of `book` whose field an existing index of its source maps as another type.
    `family_of(source)` is the source's index family (`events_{environment}`, `{prefix}_{environment}`).
    Raises OpenSearchUnavailable when the mappings cannot be read."""
    conflicts = []
    for source, typed in sorted(book.typed_by_source().items()):
        family = family_of(source)
        status, body = await request("GET", f"/{family}_*/_mapping?ignore_unavailable=true&allow_no_indices=true")
        if status != 200 or not isinstance(body, dict):
            raise OpenSearchUnavailable(f"reading the mappings of {family}_*: {status} {str(body)[:200]}")
        for index, mapping in sorted(body.items()):
            fields = (mapping.get("mappings", {}).get("properties", {}).get(TYPED_FIELD, {}).get("properties", {}))
            for name, field in sorted(typed.items()):
                old = fields.get(name, {}).get("type")
                if old is not None and old != field.type:
                    conflicts.append(f"sources.{source}: field {TYPED_FIELD}.{name} is mapped as {old} in index "
                                     f"{index}; the plan makes it {field.type} (a {field.kind} in event "
                                     f"{field.event!r}). A mapping cannot change in place: keep the type, or "
                                     "name the property anew")
    return conflicts


def retyped_fields(book: RuleBook, in_force: RuleBook) -> list[str]:
    """Every typed property `book` gives another type than the rules in force do. Refused even where no index
    maps it yet: events judged by the rules in force may still wait in the buffer or the pending store with
    their typed copies, and a boolean field, which cannot ignore a malformed value, would refuse them."""
    before = in_force.typed_by_source()
    changes = []
    for source, typed in sorted(book.typed_by_source().items()):
        for name, field in sorted(typed.items()):
            old = before.get(source, {}).get(name)
            if old is not None and old.type != field.type:
                changes.append(f"sources.{source}: field {TYPED_FIELD}.{name} is {old.type} in the rules in force "
                               f"(version {in_force.version}); the plan makes it {field.type}. Events judged by "
                               "the rules in force may still wait for delivery: keep the type, or name the "
                               "property anew")
    return changes
