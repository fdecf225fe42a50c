"""No import circle among ragzip's modules (module-level imports; those inside functions are lazy by design)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"core": "ragzip", "plugins": "ragzip.plugins", "integrations": "ragzip.integrations"}


def _modules() -> dict[str, Path]:
    mods = {}
    for folder, package in PACKAGES.items():
        for file in (ROOT / folder).rglob("*.py"):
            parts = [p for p in file.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
            mods[".".join([package, *parts])] = file
    return mods


def _imports(name: str, file: Path, mods: dict[str, Path]) -> set[str]:
    out = set()
    for node in ast.parse(file.read_text(encoding="utf-8")).body:  # top level only: no function bodies, no `if`
        if isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:
                package = name if file.name == "__init__.py" else name.rsplit(".", 1)[0]
                for _ in range(node.level - 1):
                    package = package.rsplit(".", 1)[0]
                base = f"{package}.{node.module}"
            out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m in mods and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_module_level_import_circle():
    mods = _modules()
    assert "ragzip.plugins.refrag.ttft" in mods and "ragzip.cli" in mods
    graph = {name: _imports(name, file, mods) for name, file in mods.items()}
    assert _cycles(graph) == []


def test_plugins_never_import_the_cli():
    """The CLI sits on top: a plugin that imports it closes a circle (cli -> plugin -> cli)."""
    for file in (ROOT / "plugins").rglob("*.py"):
        assert "ragzip.cli" not in file.read_text(encoding="utf-8"), file


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
