"""The rooms of the house and what each may import (docs/architecture.md), read from the source with ``ast``.

Module-level and function-level imports both count: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import gc
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# room -> packages its modules must never import (prefix match on the dotted name)
FORBIDDEN = {
    "lhc_assets/physics": ("dagster", "pyspark", "tensorflow", "keras", "resources", "lhc_assets.defs",
                           "lhc_assets.operations", "lhc_assets.ml", "lhc_assets.spark", "lhc_assets.cli"),
    "lhc_assets/ml": ("dagster", "pyspark", "resources", "lhc_assets.defs", "lhc_assets.operations",
                      "lhc_assets.spark", "lhc_assets.cli"),
    "lhc_assets/spark": ("dagster", "resources", "lhc_assets.defs", "lhc_assets.operations", "lhc_assets.cli"),
    "resources": ("lhc_assets.defs", "lhc_assets.operations", "lhc_assets.cli", "lhc_assets.definitions"),
    "lhc_assets/defs": ("lhc_assets.cli", "lhc_assets.definitions"),
}
# The one module allowed to reach into Dagster's internals.
INTERNALS = "dagster._core"
INTERNALS_ALLOWED = {"lhc_assets/operations/dagster_internals.py"}


def imported_modules(path: Path) -> set[str]:
    # CPython 3.11's AST constructor miscounts its recursion depth when a garbage collection (here: a
    # finalizer of an earlier test's SQLAlchemy pool) runs inside it: "AST constructor recursion depth
    # mismatch" (python/cpython#106905). Parsing with the collector paused avoids it.
    gc.disable()
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    finally:
        gc.enable()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(room: str) -> list[Path]:
    return sorted((REPO / room).rglob("*.py"))


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_each_room_imports_only_what_it_may(room):
    bad = {f"{path.relative_to(REPO)} imports {name}"
           for path in _modules(room) for name in imported_modules(path)
           for forbidden in FORBIDDEN[room] if name == forbidden or name.startswith(forbidden + ".")}
    assert not bad, "\n".join(sorted(bad))


def test_only_the_adapter_uses_dagster_internals():
    users = {str(path.relative_to(REPO)) for room in ("lhc_assets", "resources", "benchmarks")
             for path in _modules(room)
             if any(n == INTERNALS or n.startswith(INTERNALS + ".") for n in imported_modules(path))}
    assert users == INTERNALS_ALLOWED


def test_the_rule_sees_lazy_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from dagster import asset\n    import pyspark.sql\n")
    assert imported_modules(module) == {"dagster", "pyspark.sql"}
