"""bigtrain's sub-packages import downwards only: cli -> runs -> build -> callbacks -> training ->
distributed -> models -> data -> targets/cluster -> config -> util, counting every import in the
source (function-local ones too), so that no package needs another that needs it back."""

from __future__ import annotations

import ast
from pathlib import Path

import bigtrain

SRC = Path(bigtrain.__file__).parent

# Top to bottom; a unit may import only units of lower layers (docs/architecture.md, "Layers").
LAYERS: list[set[str]] = [
    {"bigtrain", "__main__"},  # the Python API (bigtrain/__init__.py) and `python -m bigtrain`
    {"cli"},
    {"runs"},
    {"build"},
    {"callbacks"},
    {"training"},
    {"distributed"},
    {"models"},
    {"data"},
    {"targets", "cluster"},
    {"config"},
    {"util"},
]
LEVEL = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def _module(path: Path) -> tuple[str, str]:
    """(dotted module name, the package its relative imports start from) of a file under SRC."""
    parts = ("bigtrain", *path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), ".".join(parts[:-1])
    return ".".join(parts), ".".join(parts[:-1])


UNITS = {p.stem for p in SRC.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()} - {"__init__"}


def _unit(module: str) -> str | None:
    """The sub-package (or top-level module) of bigtrain that `module` belongs to; "bigtrain" for
    the package itself and the names its __init__ defines (the Python API)."""
    parts = module.split(".")
    if parts[0] != "bigtrain":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in UNITS else "bigtrain"


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, at any depth: module level, functions, classes."""
    _, package = _module(path)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if module == "bigtrain":  # `from bigtrain import cli, train`: a sub-package, the API
                found += [(node.lineno, f"bigtrain.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, module))
    return found


def edges() -> list[tuple[str, str, str]]:
    """(importing unit, imported unit, where) for every import between two units of bigtrain."""
    out = []
    for path in sorted(SRC.rglob("*.py")):
        unit = _unit(_module(path)[0])
        for line, module in imports(path):
            other = _unit(module)
            if other is not None and other != unit:
                out.append((unit, other, f"{path.relative_to(SRC.parent)}:{line}"))
    return out


def test_every_unit_has_a_layer():
    assert UNITS | {"bigtrain"} == set(LEVEL), f"LAYERS must list exactly {sorted(UNITS)} and bigtrain"


def test_the_walk_sees_function_local_imports():
    """The walk is the check: it must see an import inside a function (cli imports runs lazily)."""
    found = [m for _, m in imports(SRC / "cli" / "__init__.py")]
    assert "bigtrain.runs.validate" in found


def test_packages_import_downwards_only():
    upward = [
        f"{where}: {unit} imports {other}" for unit, other, where in edges() if LEVEL[other] <= LEVEL[unit]
    ]
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def _module_graph() -> dict[str, set[str]]:
    """Module -> the modules of bigtrain it imports (any depth of the file)."""
    files = {_module(p)[0]: p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets = set()
        for _, module in imports(path):
            while module and module not in files:  # `from bigtrain.data.tables import load_table`
                module = module.rpartition(".")[0]
            if module and module != name:
                targets.add(module)
        graph[name] = targets
    return graph


def test_no_module_imports_itself_back():
    """Inside a package too: a registry that imports its entries lazily must not be imported by
    them (data/__init__ and its sources, models/family and its records)."""
    graph, cycles = _module_graph(), []

    def visit(node: str, path: list[str], done: set[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in done:
                visit(nxt, [*path, nxt], done)
        done.add(node)

    done: set[str] = set()
    for start in sorted(graph):
        if start not in done:
            visit(start, [start], done)
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles)))
