"""Your own pieces by `_target_`: importing what a dotted path names, and its arguments against
its signature, each mistake as one line that names the fix (docs/extending.md).

A model, a data module and each of `callbacks.extra` may be given by `_target_`. The directory
bigtrain runs in is on the import path (appended, so an installed package of the same name
wins), which makes `my_pkg/nets.py` next to the command importable as `my_pkg.nets`; an installed
package works from anywhere. Nothing here imports torch: the user's module does, if it needs it.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import sys
from collections.abc import Iterable
from typing import Any

from bigtrain.config.errors import ConfigError, close_match, did_you_mean, first_line

# Keys Hydra's instantiate reads itself; they are not arguments of the target.
HYDRA_KEYS = ("_target_", "_args_", "_partial_", "_convert_", "_recursive_")


def importable_here() -> None:
    """Put the working directory at the end of the import path (once)."""
    here = os.getcwd()
    if here not in sys.path:
        sys.path.append(here)
        importlib.invalidate_caches()


def _submodule_hint(missing: str) -> str:
    """' (did you mean pkg.other?)' for a submodule `missing` of a package that imports."""
    parent, _, leaf = missing.rpartition(".")
    try:
        package = importlib.import_module(parent) if parent else None
    except Exception:
        return ""
    paths = getattr(package, "__path__", None)
    if not paths:
        return ""
    names = [m.name for m in pkgutil.iter_modules(paths)]
    close = close_match(leaf, names)
    return f" (did you mean {parent}.{close}?)" if close else ""


def _within(module: str, name: str | None) -> bool:
    """Whether `name` is `module` or one of the packages it is in."""
    return bool(name) and (module == name or module.startswith(f"{name}."))


def _import_failure(where: str, path: str, module: str, e: BaseException) -> ConfigError:
    if isinstance(e, ModuleNotFoundError) and e.name and not _within(module, e.name):
        return ConfigError(
            f"{where}._target_={path}: importing {module} failed: it imports '{e.name}', which is "
            "not installed: pip install it"
        )
    if isinstance(e, ModuleNotFoundError) and e.name:
        top = e.name.split(".")[0]
        if e.name == top:
            return ConfigError(
                f"{where}._target_={path}: no module named '{top}': put {top}/ (or {top}.py) in the "
                "directory you run bigtrain from, or pip install it"
            )
        return ConfigError(
            f"{where}._target_={path}: no module named '{e.name}'{_submodule_hint(e.name)}: "
            "check the spelling of the module"
        )
    return ConfigError(
        f"{where}._target_={path}: importing {module} failed ({first_line(e)}): fix that module"
    )


def resolve(path: str, where: str) -> Any:
    """The object the dotted `path` names (a module, then attributes); ConfigError with one line
    naming the module or attribute that failed, and the fix. `where` is its section ('model')."""
    importable_here()
    parts = path.split(".")
    if len(parts) < 2 or not all(p.isidentifier() for p in parts):
        raise ConfigError(
            f"{where}._target_={path} is not a dotted path: give module.Name, e.g. my_pkg.nets.Net"
        )
    first_error: tuple[str, BaseException] | None = None
    for cut in range(len(parts) - 1, 0, -1):  # the longest prefix that is a module
        module_name = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if not _within(module_name, e.name):
                raise _import_failure(where, path, module_name, e) from e  # a dependency is missing
            first_error = first_error or (module_name, e)
            continue
        except Exception as e:  # the module itself fails: a syntax error, an import inside it
            raise _import_failure(where, path, module_name, e) from e
        for i, attr in enumerate(parts[cut:], cut):
            if not hasattr(obj, attr):
                if first_error is not None:  # a module of the path was not found: say so
                    raise _import_failure(where, path, *first_error)
                owner = ".".join(parts[:i])
                hint = did_you_mean(attr, [n for n in dir(obj) if not n.startswith("_")], prefix=f"{owner}.")
                raise ConfigError(f"{where}._target_={path}: {owner} has no attribute '{attr}'{hint}")
            obj = getattr(obj, attr)
        return obj
    raise _import_failure(where, path, *first_error)


def kind_problem(obj: Any, path: str, where: str, base: type, base_name: str) -> str | None:
    """The line when `obj` cannot build a `base`: a class that does not subclass it, or something
    that cannot be called. A function passes here; what it returns is checked when it runs."""
    if inspect.isclass(obj):
        if issubclass(obj, base):
            return None
        return f"{where}._target_={path} is not a {base_name}: name a subclass of {base_name}"
    if not callable(obj):
        return (
            f"{where}._target_={path} is a {type(obj).__name__}, not a class: name a subclass of {base_name}"
        )
    return None


def parameters(obj: Any) -> dict[str, inspect.Parameter] | None:
    """The keyword parameters of a class's constructor or a function; None where Python cannot
    tell (a builtin) or where any keyword is accepted (**kwargs)."""
    try:
        params = dict(inspect.signature(obj).parameters)
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return {n: p for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL}


def accepts(obj: Any, name: str) -> bool:
    """Whether the target's signature has a parameter called `name`."""
    try:
        return name in inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return False


def argument_problems(
    obj: Any, path: str, arguments: dict, where: str, supplied: Iterable[str] = ()
) -> list[str]:
    """One line per argument the target does not take, and per required one not given.
    `supplied` are the parameters bigtrain passes itself (never set them in the YAML)."""
    supplied = [s for s in supplied if accepts(obj, s)]
    given = [k for k in arguments if k not in HYDRA_KEYS]
    lines = [
        f"{where}.{k} is what bigtrain passes to {path} from the data: remove it from {where}"
        for k in given
        if k in supplied
    ]
    params = parameters(obj)
    if params is None:
        return lines
    names = [n for n in params if n not in supplied]
    for k in given:
        if k not in params:
            close = close_match(k, names)
            hint = f"did you mean {where}.{close}? " if close else ""
            takes = ", ".join(names) or "no arguments"
            lines.append(f"unknown argument '{where}.{k}' of {path}: {hint}it takes {takes}")
    if "_args_" in arguments:
        return lines  # positional arguments: Python matches them at the call
    for n, p in params.items():
        if p.default is inspect.Parameter.empty and n not in arguments and n not in supplied:
            lines.append(f"missing argument '{where}.{n}' of {path}: add {where}.{n}=<value>")
    return lines


def partial(path: str, arguments: dict) -> Any:
    """Hydra's instantiate of `path` with `arguments` as plain Python values (lists, dicts),
    returned as a partial: the caller adds what it supplies (num_outputs, input_shape)."""
    from hydra.utils import instantiate

    config = {**arguments, "_target_": path, "_partial_": True, "_convert_": "all"}
    return instantiate(config)


def target_problems(
    path: str, arguments: dict, where: str, base: type, base_name: str, supplied: Iterable[str] = ()
) -> list[str]:
    """Import, kind and signature problems of one `_target_`, each one line (config checks of the
    model, data module and extra callbacks given by `_target_` use it)."""
    try:
        obj = resolve(path, where)
    except ConfigError as e:
        return e.lines
    line = kind_problem(obj, path, where, base, base_name)
    if line is not None:
        return [line]
    return argument_problems(obj, path, arguments, where, supplied)
