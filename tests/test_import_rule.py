"""The one-way import rule (docs/architecture.md, "Who may import whom").

``schemas`` (the shared formats) imports no other hqstream package; ``hqcore``
(settings, logging, Kafka client options, process tuning) imports only
``schemas``; the services (producers, streams, api, archive) import only
``schemas``, ``hqcore`` and themselves, never each other, so they talk only
through Kafka topics and Redis keys. ``hqstream`` (the command, the local
runner, the benchmarks) sits on top and may import everything. Imports inside
functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = frozenset({"schemas", "hqcore", "producers", "streams", "api", "archive", "hqstream"})
ALLOWED: dict[str, frozenset[str]] = {
    "schemas": frozenset({"schemas"}),
    "hqcore": frozenset({"hqcore", "schemas"}),
    "producers": frozenset({"producers", "hqcore", "schemas"}),
    "streams": frozenset({"streams", "hqcore", "schemas"}),
    "api": frozenset({"api", "hqcore", "schemas"}),
    "archive": frozenset({"archive", "hqcore", "schemas"}),
    "deploy": frozenset({"schemas"}),  # deploy/*.py: tools that render manifests
}
#: Known breaches, each to be removed: (file, package it imports). Empty: a new
#: breach fails :func:`test_imports_go_one_way`, never lands here silently.
KNOWN_BREACHES: frozenset[tuple[str, str]] = frozenset()


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """(top-level hqstream package, line) of every import in one file."""
    found: set[tuple[str, int]] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update((n.split(".")[0], node.lineno) for n in names if n.split(".")[0] in OURS)
    return found


def violations(package: str) -> list[str]:
    allowed = ALLOWED[package]
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for imported, line in sorted(imported_packages(path)):
            where = path.relative_to(ROOT).as_posix()
            if imported not in allowed and (where, imported) not in KNOWN_BREACHES:
                out.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_go_one_way(package: str) -> None:
    assert violations(package) == []


def test_tests_import_no_benchmark() -> None:
    """What a test shares with a benchmark lives outside hqstream/bench (only the
    benches' own tests, in tests/bench/, import them)."""
    found = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if path.parent.name == "bench":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            if any(n == "hqstream.bench" or n.startswith("hqstream.bench.") for n in names):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []


def test_known_breaches_still_exist() -> None:
    """A breach that was fixed must leave the list (so the list never hides a new one)."""
    for where, imported in KNOWN_BREACHES:
        assert imported in {name for name, _ in imported_packages(ROOT / where)}, where


def test_the_rule_catches_a_service_importing_another(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from streams.parse import parse_record\nimport api.hub\n")
    assert imported_packages(bad) == {("streams", 2), ("api", 3)}
