"""The package layering, read from the source: no import circle anywhere in cocaine (type-only
imports included), and plugins reach the engine only through cocaine.core.plugin_api."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def modules() -> dict[str, Path]:
    found = {}
    for source in ROOT.glob("packages/*/src/cocaine"):
        for path in source.rglob("*.py"):
            if "node_modules" in path.parts:
                continue
            parts = list(path.relative_to(source.parent).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph = {}
    for name, path in known.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    imported.add(full if full in known else node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        graph[name] = {m for m in imported if m in known and m != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for dependency in sorted(graph[module]):
            if state.get(dependency) == 1:
                return path[path.index(dependency):] + [dependency]
            if dependency not in state and (cycle := visit(dependency)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_the_graph_is_read():
    graph = import_graph()
    assert "cocaine.core.engine.pool" in graph["cocaine.core.engine.engine"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_circle():
    assert find_cycle(import_graph()) is None


def test_plugins_import_no_engine_internals():
    graph = import_graph()
    plugins = [m for m in graph if not m.startswith(("cocaine.core", "cocaine.cli"))]
    assert "cocaine.drivers.zeromq_server" in plugins
    for module in plugins + ["cocaine.core.plugin_api"]:
        internal = sorted(m for m in graph[module] if m.startswith("cocaine.core.engine"))
        assert not internal, f"{module} imports {internal}: export what it needs from cocaine.core.plugin_api"
