"""Rules the source tree keeps, checked on its syntax trees: no private names of Lightning, Hydra's
internals only where docs/architecture.md lists them, files and functions of a readable size."""

from __future__ import annotations

import ast
import importlib.util
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "bigtrain"
LIGHTNING = ("pytorch_lightning", "lightning_fabric", "lightning")
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 60


def _sources(folder: Path = SRC) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@cache
def lightning_private_names() -> frozenset[str]:
    """Every private name Lightning's own code defines: functions, classes, module globals and
    attributes it assigns (`self._x = ...`). An access `obj._x` in bigtrain with one of these
    names reads or writes Lightning's internals (or shadows them in a subclass)."""
    names: set[str] = set()
    for package in ("pytorch_lightning", "lightning_fabric"):
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.origin is not None
        for path in Path(spec.origin).parent.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    candidates = [node.name]
                elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                    candidates = [node.attr]
                elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    candidates = [node.id]
                else:
                    continue
                names.update(n for n in candidates if _private(n))
    return frozenset(names)


def private_lightning_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for each import of a private Lightning module or name, and each attribute
    access whose name is one of Lightning's private names."""
    private = lightning_private_names()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in LIGHTNING:
            parts = node.module.split(".")
            names = [a.name for a in node.names]
            if any(_private(p) for p in parts) or any(_private(n) for n in names):
                found.append((node.lineno, f"from {node.module} import {', '.join(names)}"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] in LIGHTNING and any(_private(p) for p in parts):
                    found.append((node.lineno, f"import {alias.name}"))
        elif isinstance(node, ast.Attribute) and node.attr in private:
            found.append((node.lineno, f".{node.attr}"))
    return found


def test_no_private_names_of_lightning_in_src():
    offences = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path in _sources()
        for line, what in private_lightning_uses(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert not offences, "private Lightning names used:\n" + "\n".join(offences)


def test_the_private_name_scan_finds_what_it_must():
    """The scan itself: each form of reaching into Lightning is caught, public code is not."""
    bad = (
        "from pytorch_lightning.utilities.rank_zero import _info\n"
        "import lightning_fabric.utilities._pytree\n"
        "n = trainer.fit_loop.epoch_loop._batches_that_stepped\n"
        "trainer._logger_connector.should_update_logs\n"
    )
    assert len(private_lightning_uses(ast.parse(bad))) == 4
    good = "from pytorch_lightning.callbacks import RichProgressBar\nx = trainer.global_step\n"
    assert private_lightning_uses(ast.parse(good)) == []


def _hydra_internal_uses(tree: ast.AST) -> set[str]:
    """Dotted names under hydra._internal that a module imports or reads."""
    uses = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hydra._internal"):
            uses.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Attribute):
            dotted = ast.unparse(node)
            if dotted.startswith("hydra._internal.") and re.fullmatch(r"[\w.]+", dotted):
                uses.add(dotted)
    # Keep the longest names only: hydra._internal.utils.get_args_parser, not its prefixes.
    return {u for u in uses if not any(o != u and o.startswith(u + ".") for o in uses)}


def test_hydra_internals_are_only_the_ones_the_architecture_lists():
    listed = set(re.findall(r"`(hydra\._internal[\w.]*)`", (ROOT / "docs" / "architecture.md").read_text()))
    used = {}
    for path in _sources():
        for name in _hydra_internal_uses(ast.parse(path.read_text(encoding="utf-8"))):
            used.setdefault(name, []).append(str(path.relative_to(ROOT)))
    unlisted = {name: files for name, files in used.items() if name not in listed}
    assert not unlisted, f"Hydra internals not listed in docs/architecture.md: {unlisted}"
    stale = listed - set(used)
    assert not stale, f"docs/architecture.md lists Hydra internals no longer used: {sorted(stale)}"


@pytest.mark.parametrize("folder", ["src", "scripts", "tests"])
def test_no_source_file_is_past_the_size_limit(folder):
    long = {
        str(p.relative_to(ROOT)): n
        for p in _sources(ROOT / folder)
        if (n := len(p.read_text(encoding="utf-8").splitlines())) >= MAX_FILE_LINES
    }
    assert not long, f"files of {MAX_FILE_LINES} lines or more: {long}"


def test_no_function_in_src_is_longer_than_a_screen():
    long = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def test_every_source_file_says_its_job_in_its_first_docstring_line():
    missing = [
        str(p.relative_to(ROOT))
        for p in _sources()
        if p.stat().st_size
        and not (ast.get_docstring(ast.parse(p.read_text(encoding="utf-8"))) or "").strip()
    ]
    assert not missing, f"modules without a docstring: {missing}"
