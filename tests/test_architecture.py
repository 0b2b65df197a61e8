"""The tree's architecture, checked on the source (``ast``, nothing imported): no import cycle between
fedmjp's modules, its folders import only the layers below them, and nothing outside tests/ imports tests."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# fedmjp's layers, lowest first: a layer imports only layers before it (and itself).
LAYERS = ["errors", "protocol", "catalog", "models", "data", "scenario", "scenario_reference", "federation", "defences", "attacks", "scoring",
          "audit", "launch", "results", "commands", "cli", "__main__"]
# None: scenario.py checks attack and model names against fedmjp.catalog, below it.
ALLOWED_UP: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, modules: set[str]) -> set[str]:
    """Modules of ``modules`` that ``path`` imports, at module level or inside functions (a lazy import is
    still a dependency)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    paths = list((ROOT / "fedmjp").rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imported(p, modules) for p in paths}


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as the list of modules around it), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def layer(module: str) -> str:
    return module.split(".")[1] if "." in module else "fedmjp"


def test_no_import_cycle_between_fedmjp_modules():
    assert cycle(import_graph()) is None, " -> ".join(cycle(import_graph()) or [])


def test_the_cycle_finder_finds_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_each_folder_imports_only_the_layers_below_it():
    graph = import_graph()
    layers = {layer(m) for m in graph} - {"fedmjp"}
    assert layers <= set(LAYERS), f"layers missing from LAYERS: {sorted(layers - set(LAYERS))}"
    upward = sorted({(layer(m), layer(d)) for m, deps in graph.items() for d in deps
                     if layer(m) != "fedmjp" and layer(d) != "fedmjp"
                     and LAYERS.index(layer(d)) > LAYERS.index(layer(m))} - ALLOWED_UP)
    assert not upward, f"imports of a higher layer: {upward}"


def test_the_library_never_imports_the_flower_apps_and_nothing_outside_tests_imports_tests():
    offenders = []
    for folder in ("fedmjp", "clients", "server", "bench", "scripts"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                         else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
                tops = {n.split(".")[0] for n in names}
                if "tests" in tops or (folder == "fedmjp" and tops & {"clients", "server"}):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders
