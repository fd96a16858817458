"""The import graph of bigtrain, read from the syntax trees of src/bigtrain: it has no cycle, and
the config package imports nothing else of bigtrain (so schemas and errors load without torch,
data or models).

Every import statement counts, at module level or inside a function. An import of a module's
own ancestor package is left out: Python runs a package's __init__ before any module inside it,
so that edge orders nothing (a package that imports its own modules inside functions, and those
modules importing the package's names, is the usual layout of a package, not a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_names(src: Path = SRC) -> dict[str, Path]:
    """Dotted name -> file of every module of the bigtrain package."""
    names = {}
    for path in sorted((src / "bigtrain").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _imported(tree: ast.AST, name: str, is_package: bool) -> set[str]:
    """Dotted names that the module `name` imports (candidates: modules or names in them)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)
    return found


def import_graph(modules: dict[str, str], packages: set[str]) -> dict[str, set[str]]:
    """Module -> the bigtrain modules it imports, from the source text of each module
    (`packages`: the names whose source is a package's __init__.py)."""
    graph = {}
    for name, source in modules.items():
        edges = set()
        for target in _imported(ast.parse(source), name, name in packages):
            while target and target not in modules:  # `from pkg import name` -> pkg
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                edges.add(target)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def bigtrain_graph() -> dict[str, set[str]]:
    """The import graph of src/bigtrain."""
    files = module_names()
    sources = {name: path.read_text(encoding="utf-8") for name, path in files.items()}
    return import_graph(sources, {name for name, path in files.items() if path.name == "__init__.py"})


def test_the_bigtrain_import_graph_has_no_cycle():
    graph = bigtrain_graph()
    assert len(graph) > 40 and "bigtrain.config.convert" in graph["bigtrain.config.schema_data"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_config_package_imports_no_other_part_of_bigtrain():
    graph = bigtrain_graph()
    outside = {
        name: sorted(t for t in targets if not t.startswith("bigtrain.config"))
        for name, targets in graph.items()
        if name == "bigtrain.config" or name.startswith("bigtrain.config.")
    }
    assert len(outside) >= 6  # the package and its modules were all read
    assert not any(outside.values()), f"bigtrain.config imports other bigtrain modules: {outside}"


def test_the_graph_sees_every_kind_of_import():
    """The reader itself: imports at module level, inside functions, relative, of a name in a
    package; ancestors left out; and a cycle through a function-level import is found."""
    modules = {
        "bigtrain": "",
        "bigtrain.a": "from bigtrain.b import thing\n",
        "bigtrain.b": "def f():\n    import bigtrain.c\n",
        "bigtrain.c": "from . import a\n",
        "bigtrain.pkg": "def g():\n    from bigtrain.pkg.mod import h\n",
        "bigtrain.pkg.mod": "from bigtrain.pkg import g\nfrom bigtrain import a\n",
    }
    graph = import_graph(modules, {"bigtrain", "bigtrain.pkg"})
    assert graph["bigtrain.a"] == {"bigtrain.b"} and graph["bigtrain.b"] == {"bigtrain.c"}
    assert graph["bigtrain.c"] == {"bigtrain.a"}
    assert graph["bigtrain.pkg"] == {"bigtrain.pkg.mod"} and graph["bigtrain.pkg.mod"] == {"bigtrain.a"}
    assert find_cycle(graph) == ["bigtrain.a", "bigtrain.b", "bigtrain.c", "bigtrain.a"]
    del graph["bigtrain.c"]
    assert find_cycle(graph) is None
