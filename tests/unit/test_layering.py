"""The house's layering, read from the code's imports (ast): every import runs down a floor, no room imports
one on its own floor, and no module-level circle exists. docs/architecture.md draws the same picture; this
test is what keeps it true. An import inside a function or under TYPE_CHECKING is an arrow too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "event_collector"

# Each room (a top-level module, or a package with everything under it) on its floor; a room may import
# only rooms on lower floors. Adding a room means giving it a floor here and in docs/architecture.md.
FLOORS = {
    "exceptions": 0, "logs": 0, "metrics": 0, "worker_slots": 0,
    "settings": 1, "watched_file": 1,
    "retry": 2, "enrich": 2, "collecting": 2, "sources": 2,
    "envelope": 3, "rules": 3,
    "outcomes": 4, "buffer": 4, "in_flight": 4,
    "pending": 5, "shipper": 5,
    "delivery": 6, "kafka": 6,
    "lifecycle": 7,
    "modes": 8, "tools": 8, "receipts": 8, "verify": 8,
    "api": 9,
    "cli": 10,
}

# Arrows that must never exist, and why: the floors forbid them already; these say what breaks if they appear.
FORBIDDEN = {
    ("shipper", "pending"): "the shipper hands outcomes up; only the delivery policy (delivery.py) writes the store",
    ("pending", "shipper"): "the store keeps events; it must not know how they are sent",
    ("lifecycle", "kafka"): "modes.py picks the collector by ack mode; lifecycle.py knows nothing of Kafka",
    ("settings", "enrich"): "settings are parsed in settings.py, not in the stages that use them",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, module: str, *, top_level_only: bool = False) -> set[str]:
    """The event_collector modules (or names in them) that `path` imports."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    nodes = [n for n in tree.body if not isinstance(n, ast.If)] if top_level_only else list(ast.walk(tree))
    targets = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets |= {f"{source}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
    return {t for t in targets if t.startswith("event_collector.")}


def room(module: str) -> str:
    return module.split(".")[1]


def arrows() -> dict[tuple[str, str], list[str]]:
    """(from room, to room) -> the modules that draw it."""
    found: dict[tuple[str, str], set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        if module == "event_collector":
            continue
        for target in imported(path, module):
            if room(target) != room(module):
                found.setdefault((room(module), room(target)), set()).add(module)
    return {pair: sorted(modules) for pair, modules in found.items()}


def test_every_room_has_a_floor():
    rooms = {module_name(p).split(".")[1] for p in PACKAGE.rglob("*.py") if module_name(p) != "event_collector"}
    assert rooms == set(FLOORS), "give each new room a floor here and in docs/architecture.md"


def test_no_forbidden_arrow():
    drawn = arrows()
    found = {pair: f"{reason} (drawn by {', '.join(drawn[pair])})" for pair, reason in FORBIDDEN.items()
             if pair in drawn}
    assert not found, found


def test_every_arrow_runs_down_a_floor():
    upward = {f"{source} -> {target}": modules for (source, target), modules in arrows().items()
              if FLOORS[target] >= FLOORS[source]}
    assert not upward, f"imports that run up or across a floor: {upward}"


def test_no_module_level_circle():
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for module, path in modules.items():
        targets = imported(path, module, top_level_only=True)
        # `from .x import name` names a module when x.name is one, else a name in module x.
        graph[module] = {t if t in modules else t.rpartition(".")[0] for t in targets} & set(modules)
    circles = [cycle for cycle in (find_cycle(graph, start) for start in graph) if cycle]
    assert not circles, circles[0]


def find_cycle(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path of imports from `start` back to itself, if any."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for target in graph.get(node, ()):
            if target == start:
                return path + [start]
            if target not in seen:
                seen.add(target)
                stack.append((target, path + [target]))
    return None


@pytest.mark.parametrize("source, target", sorted(FORBIDDEN))
def test_the_check_sees_a_forbidden_arrow_when_one_is_drawn(tmp_path, source, target):
    """The reader itself: an import of `target` written in `source` is found, relative or absolute."""
    path = tmp_path / "event_collector" / source / "probe.py"
    path.parent.mkdir(parents=True)
    path.write_text(f"def later():\n    from ..{target} import anything\n")
    found = imported(path, f"event_collector.{source}.probe")
    assert {room(t) for t in found} == {target}
