"""The rooms' imports point one way and form no cycle (DESIGN.md; issue 12). Read with `ast`, so a function-level
import counts as much as one at the top: an arrow is an arrow.

The table below is written by hand from the design, not read from the code: a new arrow needs a line here.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = {
    "imaging",
    "labelled_data",
    "inference",
    "case_retrieval",
    "reports",
    "interop",
    "mlops",
    "monitoring",
    "storage",
}

# room -> the rooms it may import (besides itself). Down the design table: api -> domain rooms -> imaging/storage.
MAY_IMPORT: dict[str, set[str]] = {
    "app": {"ui"},
    "ui": {"settings"},  # the UI reaches the backend over HTTP only
    "api": DOMAIN | {"active_learning", "settings"},
    "active_learning": {"storage", "settings"},
    "monitoring": {"storage", "settings"},
    "mlops": {"imaging", "labelled_data", "inference", "case_retrieval", "storage", "settings"},
    "case_retrieval": {"inference", "imaging", "labelled_data", "storage", "settings"},  # storage: durable files
    "reports": set(),
    "interop": {"reports"},  # DICOM and FHIR out, written from the report's case record
    "inference": {"imaging", "settings"},
    "labelled_data": {"imaging"},
    "imaging": set(),
    "storage": {"settings"},
    "settings": set(),
}
NOT_ROOMS = {"tests", "bench", "scripts", ".venv", "var", "models", "mutants"}  # mutants: mutmut's copy


def product_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every product module (tests, benchmarks and scripts use the rooms)."""
    modules = {}
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT)
        if relative.parts[0] in NOT_ROOMS or "migrations" in relative.parts:
            continue
        parts = list(relative.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imported_modules(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The product modules `path` imports, anywhere in the file (a `from pkg import sub` names the submodule)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {module for module in found if module in modules and module != name}


def import_graph() -> dict[str, set[str]]:
    modules = product_modules()
    return {name: imported_modules(path, name, modules) for name, path in modules.items()}


def room_of(module: str) -> str:
    return module.split(".")[0]


def test_every_room_is_in_the_table() -> None:
    unknown = {room_of(module) for module in product_modules()} - set(MAY_IMPORT)
    assert not unknown, f"new room(s) {sorted(unknown)}: add a line to MAY_IMPORT (and to DESIGN.md's table)"


def test_no_room_imports_against_the_design() -> None:
    wrong = defaultdict(set)
    for module, targets in import_graph().items():
        for target in targets:
            if room_of(target) != room_of(module) and room_of(target) not in MAY_IMPORT[room_of(module)]:
                wrong[module].add(target)
    assert not wrong, f"imports against the design table: {dict(wrong)}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            target = next(stack[-1], None)
            if target is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(target) == 1:
                return [*path[path.index(target) :], target]
            elif not state.get(target):
                state[target] = 1
                path.append(target)
                stack.append(iter(sorted(graph[target])))
    return None


def test_no_import_cycle_between_modules() -> None:
    # A package's __init__ re-exports its modules; a module of the same package importing that __init__ back would
    # be a real cycle (a partially initialised package), so it counts.
    cycle = find_cycle(import_graph())
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"b"}, "b": set(), "c": {"a"}}, None),
    ],
)
def test_the_cycle_finder_finds_cycles(graph: dict[str, set[str]], expected: list[str] | None) -> None:
    assert find_cycle(graph) == expected


def test_an_upward_import_is_reported(tmp_path: Path) -> None:
    module = tmp_path / "ood.py"
    module.write_text("def fit():\n    from mlops import data\n", encoding="utf-8")
    found = imported_modules(module, "inference.ood", {"mlops": module, "mlops.data": module, "inference.ood": module})
    assert found == {"mlops", "mlops.data"}
    assert "mlops" not in MAY_IMPORT["inference"]
