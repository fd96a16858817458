"""Which `_target_`s a config read from a run directory may build: bigtrain's own classes, and
anything else only when the user typed the trust flag now.

A run directory, a checkpoint or a config file may come from someone else, and Hydra's
`instantiate` calls whatever a `_target_` names with the file's arguments (`builtins.open`,
`torch.load(weights_only=False)`, `shutil.copyfile`...). So before a saved config is composed,
validated or built (eval, predict, `bigtrain.load`, resume), every `_target_` in it, at any
depth (instantiate is recursive), must name a class defined inside bigtrain; a function or a
class from any other package needs `trust_code` typed on the command line (`--trust-code`,
`trust_code=true`, `trust_code=True` in Python), as transformers asks for `trust_remote_code`.

Nothing is imported to decide but bigtrain's own modules. No torch here.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator
from typing import Any

from bigtrain.config.errors import ConfigError

OWN = "bigtrain"


def targets_in(node: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """(where, value) of every `_target_` key in a plain config tree (dicts and lists)."""
    if isinstance(node, dict):
        if "_target_" in node:
            yield where or "<top>", node["_target_"]
        for key, value in node.items():
            if key != "_target_":
                yield from targets_in(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from targets_in(value, f"{where}[{i}]")


def is_own_class(path: Any) -> bool:
    """Whether the dotted `path` names a class defined in bigtrain (only bigtrain is imported)."""
    if not isinstance(path, str) or not path.startswith(f"{OWN}."):
        return False
    parts = path.split(".")
    if not all(p.isidentifier() for p in parts):
        return False
    for cut in range(len(parts) - 1, 0, -1):  # the longest prefix that is a module of bigtrain
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
        defined_in = getattr(obj, "__module__", None) or ""
        return inspect.isclass(obj) and (defined_in == OWN or defined_in.startswith(f"{OWN}."))
    return False


def check_trusted(config: Any, trusted: bool, source: str, flag: str) -> None:
    """Raise ConfigError (one line) when `config`, read from `source`, names a `_target_` that is
    not one of bigtrain's classes and the user did not type `flag`."""
    if trusted:
        return
    foreign = [f"{where}._target_={value}" for where, value in targets_in(config) if not is_own_class(value)]
    if foreign:
        raise ConfigError(
            f"{source} names code outside bigtrain ({', '.join(foreign)}), which a run directory cannot "
            f"choose to run: if you trust where it came from, add {flag}"
        )
