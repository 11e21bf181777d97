"""PII rules applied to an event's properties: each path is dropped, hashed or masked (docs/rules.md).

Where a path reaches (each decision a user of the pipeline would otherwise have to guess):
- Dots nest: `address.street` is properties["address"]["street"]. A key that holds the dots itself
  ({"address.street": ...}) matches too, at any level, so PII is not missed because an app flattened it.
- A list met on the way applies the rest of the path to each of its objects (`items.email` reaches every
  item's e-mail); other elements are left as they are.
- A list at the end of the path: hash and mask apply to each element (so each e-mail in a list still joins),
  one level deep (an element that is a list is one value), for lists of up to MAX_ELEMENTWISE elements; a
  longer list is one value (its JSON hashed, or "****"), which bounds the work a hostile list can cause.
  drop removes the key.
- A missing path, or a path through something that is not an object, changes nothing.
- null stays null under hash and mask: there is nothing to hide, and a hash of null would be one constant.

What the actions write:
- hash: HMAC-SHA256 with RULES_HASH_KEY, as 64 lowercase hex digits. Equal values give equal hashes, so joins
  and distinct counts still work, and without the key a guessed value cannot be checked. A string is hashed
  from its UTF-8 bytes; any other value from its compact JSON encoding with keys sorted, so the number 5 and
  the string "5" hash alike (an id sent sometimes as a number still joins) and {"a":1,"b":2} hashes as
  {"b":2,"a":1}.
- mask: a string longer than 8 characters keeps its last 4 and has every other character replaced by '*'
  ("+33612345678" -> "********5678"); a shorter one is all '*' (keeping 4 of 6 characters would show most of
  it). Any other value (number, boolean, object) becomes "****".
- drop: the key is removed.

The input is never changed: only the objects and lists on the way to a changed value are copied. The walk
through lists and objects recurses: the door bounds the nesting first (api/validation.py's MAX_PARAM_DEPTH,
20 levels).
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable

import msgspec

ACTIONS = ("hash", "mask", "drop")
MASK_KEPT_CHARS = 4
MASK_MIN_CHARS_TO_KEEP = 9
MASKED_NON_STRING = "****"
# A list at the end of a path longer than this is hashed or masked whole, as one value.
MAX_ELEMENTWISE = 100

_json = msgspec.json.Encoder(order="sorted")
_DROPPED = object()
_SHA256_BLOCK_BYTES = 64


def hasher(key: bytes) -> Callable[[Any], Any]:
    hmac_sha256 = _hmac_sha256(key)

    def hash_one(value: Any) -> Any:
        if isinstance(value, str):
            # surrogatepass: a JSON string may carry a lone surrogate (\ud800), which strict UTF-8 refuses.
            return hmac_sha256(value.encode("utf-8", "surrogatepass"))
        if value is None:
            return None
        return hmac_sha256(_json.encode(value))
    return _each_element(hash_one)


def _hmac_sha256(key: bytes) -> Callable[[bytes], str]:
    """HMAC-SHA256 (RFC 2104) from the two padded key states, computed once: with OpenSSL 3, hmac.digest sets up
    its MAC anew on each call, which costs 2 to 3 times this (bench/rules_transforms.py). The result is
    hmac.new(key, data, sha256).hexdigest(), as tests/unit/test_rules_pii.py checks."""
    if len(key) > _SHA256_BLOCK_BYTES:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_SHA256_BLOCK_BYTES, b"\0")
    inner = hashlib.sha256(bytes(byte ^ 0x36 for byte in key))
    outer = hashlib.sha256(bytes(byte ^ 0x5C for byte in key))

    def digest(data: bytes) -> str:
        inner_hash = inner.copy()
        inner_hash.update(data)
        outer_hash = outer.copy()
        outer_hash.update(inner_hash.digest())
        return outer_hash.hexdigest()
    return digest


def _mask_one(value: Any) -> Any:
    if isinstance(value, str):
        if len(value) < MASK_MIN_CHARS_TO_KEEP:
            return "*" * len(value)
        return "*" * (len(value) - MASK_KEPT_CHARS) + value[-MASK_KEPT_CHARS:]
    if value is None:
        return None
    return MASKED_NON_STRING


def _each_element(action: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`action` applied to a value, or to each element of a list of at most MAX_ELEMENTWISE (one level: an
    element that is itself a list is one value). A longer list is one value, so that a hostile list costs one
    HMAC, not one per element: 32,000 numbers in a 64 KB body cost 29 ms to hash one by one."""
    def apply(value: Any) -> Any:
        if isinstance(value, list) and len(value) <= MAX_ELEMENTWISE:
            return [action(item) for item in value]
        return action(value)
    return apply


mask = _each_element(_mask_one)


class PiiRule:
    """One path and what to do at its end. `replace` is None for drop."""

    __slots__ = ("path", "segments", "replace", "_keys")

    def __init__(self, path: str, replace: Callable[[Any], Any] | None) -> None:
        self.path = path
        self.segments = tuple(path.split("."))
        self.replace = replace
        # _keys[i] lists (key, next segment) for the keys that may hold segment i: "a", "a.b", "a.b.c", ...
        count = len(self.segments)
        self._keys = tuple(tuple((".".join(self.segments[i:j]), j) for j in range(i + 1, count + 1))
                           for i in range(count))

    def apply(self, properties: dict[str, Any]) -> dict[str, Any]:
        """`properties` with the rule applied: the same object when nothing matched, else a changed copy."""
        return self._in_object(properties, 0)

    def _in_object(self, node: dict[str, Any], at: int) -> dict[str, Any]:
        changed = None
        for key, after in self._keys[at]:
            if key not in node:
                continue
            old = node[key]
            if after < len(self.segments):
                new = self._in_value(old, after)
            elif self.replace is None:
                new = _DROPPED
            else:
                new = self.replace(old)
            if new is old:
                continue
            if changed is None:
                changed = dict(node)
            if new is _DROPPED:
                del changed[key]
            else:
                changed[key] = new
        return node if changed is None else changed

    def _in_value(self, value: Any, at: int) -> Any:
        if isinstance(value, dict):
            return self._in_object(value, at)
        if isinstance(value, list):
            items = [self._in_value(item, at) for item in value]
            return value if all(new is old for new, old in zip(items, value)) else items
        return value

