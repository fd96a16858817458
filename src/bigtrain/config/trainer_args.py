"""Lightning Trainer arguments that bigtrain does not list, passed through with +trainer.NAME.

The names come from `Trainer.__init__`'s signature, read from Lightning's source file with `ast`
instead of importing Lightning (seconds), so config errors stay fast. Arguments that bigtrain
builds itself (callbacks, loggers, strategy, plugins, ...) cannot be passed through. Every key of
`trainer.lightning` (where passed-through arguments land, and where a YAML file may write them)
is checked against the same signature, so a misspelt argument is one line before the run
instead of the Trainer's TypeError after the run directory exists.
"""

from __future__ import annotations

import ast
import importlib.util
from functools import cache
from pathlib import Path
from typing import Any

from bigtrain.config.errors import close_match, fmt

# Trainer arguments bigtrain sets from its own groups: overriding them would bypass them.
OWNED = {
    "callbacks": "add Lightning callbacks with callbacks.extra=[{_target_: ...}]",
    "logger": "choose loggers with logger=...",
    "strategy": "choose strategy=...",
    "plugins": "bigtrain sets its checkpoint and cluster plugins itself",
    "default_root_dir": "set hydra.run.dir",
    "enable_model_summary": "set callbacks.model_summary_depth",
    "enable_checkpointing": "set callbacks.checkpoint.*",
}


@cache
def trainer_arguments() -> frozenset[str]:
    """The keyword arguments of Lightning's `Trainer.__init__` (empty if Lightning is missing)."""
    spec = importlib.util.find_spec("pytorch_lightning")
    if spec is None or spec.origin is None:
        return frozenset()
    source = Path(spec.origin).parent / "trainer" / "trainer.py"
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ClassDef) and node.name == "Trainer":
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    args = item.args
                    return frozenset(a.arg for a in [*args.args, *args.kwonlyargs] if a.arg != "self")
    return frozenset()


def split_passthrough(trainer: dict, listed: set[str]) -> tuple[dict, dict, list[str]]:
    """(bigtrain's own keys, Trainer arguments to pass through, one error line per key that is
    neither or that bigtrain owns). An unknown key whose closest name is a Trainer argument is
    reported here with that name; the schema reports the other unknown keys."""
    own, passed, errors = {}, {}, []
    for key, value in trainer.items():
        if key in listed:
            own[key] = value
        elif key in OWNED:
            errors.append(f"trainer.{key} is built by bigtrain: {OWNED[key]}")
        elif key in trainer_arguments():
            passed[key] = value
        elif (close := close_match(key, [*listed, *passable()])) in passable():
            errors.append(
                f"unknown key 'trainer.{key}': did you mean +trainer.{close}? (a Lightning Trainer "
                "argument, passed through as +trainer.NAME=value)"
            )
        else:
            own[key] = value  # reported as an unknown key by the schema
    return own, passed, errors


def passable() -> list[str]:
    """The Trainer arguments that may be passed through, sorted (none if Lightning is missing)."""
    return sorted(trainer_arguments() - OWNED.keys())


def lightning_errors(lightning: Any, listed: set[str]) -> list[str]:
    """One error line per key of `trainer.lightning` that the Trainer would refuse (not one of
    its arguments) or that would clash with what bigtrain passes it (its own `trainer.*` keys and
    the arguments it builds). Nothing is checked where Lightning's source cannot be read."""
    if lightning is None:
        return []
    if not isinstance(lightning, dict):
        return [
            f"trainer.lightning={lightning} must be a mapping of Trainer arguments: write +trainer.NAME=value"
        ]
    if not trainer_arguments():
        return []
    errors = []
    for key, value in lightning.items():
        where = f"trainer.lightning.{key}"
        if key in listed:
            errors.append(f"{where} is bigtrain's own trainer.{key}: set trainer.{key}={fmt(value)} instead")
        elif key in OWNED:
            errors.append(f"{where} is built by bigtrain: {OWNED[key]}")
        elif key not in trainer_arguments():
            close = close_match(key, [*listed, *passable()])
            hint = f" (did you mean {'trainer' if close in listed else 'trainer.lightning'}.{close}?)"
            errors.append(
                f"{where} is not an argument of Lightning's Trainer{hint if close else ''}: correct "
                "the name, or drop it"
            )
    return errors


def passthrough_hint(key: str) -> str:
    """The `+trainer.NAME=...` hint, for a key where it works; '' elsewhere."""
    parent, _, leaf = key.rpartition(".")
    if parent == "trainer" and leaf in trainer_arguments() and leaf not in OWNED:
        return f"it is a Lightning Trainer argument: write +{key}=..."
    return ""
