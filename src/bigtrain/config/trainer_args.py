"""Lightning Trainer arguments that bigtrain does not list, passed through as trainer.NAME.

`trainer.NAME=value` (or `+trainer.NAME=value`) for a NAME that bigtrain's trainer schema does not
list is added to the config by runs/compose.py and moved into `trainer.lightning` here, once NAME
is found among the keyword arguments of Lightning's `Trainer.__init__` (`inspect.signature`).
Lightning is imported (seconds) only when such a key is there to check: `--help` and configs
without passed-through arguments never import it. Arguments that bigtrain builds itself
(callbacks, loggers, strategy, plugins, ...) cannot be passed through. Every key of
`trainer.lightning` (where passed-through arguments land, and where a YAML file may write them)
is checked against the same signature, so a misspelt argument is one line before the run
instead of the Trainer's TypeError after the run directory exists.
"""

from __future__ import annotations

import inspect
from functools import cache
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
    """The keyword arguments of Lightning's `Trainer.__init__` (empty if Lightning is missing).
    Imports Lightning: call it only for a key that needs the list."""
    try:
        from pytorch_lightning import Trainer
    except ImportError:
        return frozenset()
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = inspect.signature(Trainer.__init__).parameters.values()
    return frozenset(p.name for p in params if p.kind in named and p.name != "self")


def split_passthrough(trainer: dict, listed: set[str]) -> tuple[dict, dict, list[str]]:
    """(bigtrain's own keys, Trainer arguments to pass through, one error line per key that is
    neither or that bigtrain owns). An unknown key with a close name (bigtrain's or a Trainer
    argument) is reported here with that name; the schema reports the other unknown keys."""
    own, passed, errors = {}, {}, []
    for key, value in trainer.items():
        if key in listed:
            own[key] = value
        elif key in OWNED:
            errors.append(f"trainer.{key} is built by bigtrain: {OWNED[key]}")
        elif key in trainer_arguments():
            passed[key] = value
        elif close := close_match(key, [*listed, *passable()]):
            what = "" if close in listed else " (a Lightning Trainer argument)"
            errors.append(f"unknown key 'trainer.{key}': did you mean trainer.{close}?{what}")
        else:
            own[key] = value  # reported as an unknown key by the schema
    return own, passed, errors


def passable() -> list[str]:
    """The Trainer arguments that may be passed through, sorted (none if Lightning is missing)."""
    return sorted(trainer_arguments() - OWNED.keys())


def lightning_errors(lightning: Any, listed: set[str]) -> list[str]:
    """One error line per key of `trainer.lightning` that the Trainer would refuse (not one of
    its arguments) or that would clash with what bigtrain passes it (its own `trainer.*` keys and
    the arguments it builds). Nothing is checked where Lightning cannot be imported."""
    if lightning is None:
        return []
    if not isinstance(lightning, dict):
        return [
            f"trainer.lightning={lightning} must be a mapping of Trainer arguments: write trainer.NAME=value"
        ]
    if not lightning or not trainer_arguments():  # nothing to check, or no Lightning to check it
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


def markdown_table(listed: set[str]) -> str:
    """Every argument of the installed Lightning's `Trainer.__init__`, with its default and how a
    bigtrain command sets it (`listed`: bigtrain's own `trainer.*` keys), as a Markdown table."""
    import pytorch_lightning as pl

    rows = [
        f"Lightning {pl.__version__}'s `Trainer` arguments (`python scripts/trainer_args.py`):",
        "",
        "| argument | Lightning's default | in bigtrain |",
        "|---|---|---|",
    ]
    params = inspect.signature(pl.Trainer.__init__).parameters.values()
    for p in (p for p in params if p.name in trainer_arguments()):
        default = "" if p.default is inspect.Parameter.empty else f"`{p.default!r}`"
        if p.name in listed:
            how = f"`trainer.{p.name}` (bigtrain's own key: its default is bigtrain's)"
        elif p.name in OWNED:
            how = f"built by bigtrain: {OWNED[p.name]}"
        else:
            how = f"`trainer.{p.name}=value`"
        rows.append(f"| `{p.name}` | {default} | {how} |")
    return "\n".join(rows)
