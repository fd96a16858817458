"""Plain dicts to frozen dataclasses, checking every value's type and range on the way.

Conversion does not stop at the first mistake: every unknown key, missing key, wrong type and
out-of-range value of the whole config is collected, and one ConfigError reports them all, one
line each. The schema modules declare their fields with `opt` (range rules and a doc string,
never a default: defaults live in conf/*.yaml) and register the dataclass of each option of a
section with `variant`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import field
from typing import Any, Literal, Union

from bigtrain.config.errors import ConfigError, close_match, config_error, did_you_mean, fmt

# Sections whose schema is chosen by one key: section -> (key, {value: dataclass}). Filled by
# the @variant decorator on each schema dataclass.
VARIANTS: dict[str, tuple[str, dict[str, type]]] = {
    "data": ("name", {}),
    "model": ("family", {}),
    "optim": ("name", {}),
    "sched": ("name", {}),
    "strategy": ("name", {}),
}


# Sections that may instead be given by `_target_` (docs/extending.md): section -> the dataclass
# that holds the target and its arguments. Filled by @target_variant.
TARGETS: dict[str, type] = {}


def target_variant(section: str):
    """Register a dataclass as the schema of `section` when it has a `_target_` key."""

    def register(cls: type) -> type:
        TARGETS[section] = cls
        return cls

    return register


def variant(section: str, *names: str):
    """Register a dataclass as the schema of `section` when its key is one of `names`."""

    def register(cls: type) -> type:
        for name in names:
            VARIANTS[section][1][name] = cls
        return cls

    return register


def opt(doc: str = "", **checks: Any) -> Any:
    """A required schema field with a doc string and range rules: gt, ge, lt, le, nonempty, length."""
    return field(metadata={"doc": doc, **checks})


def type_name(tp: Any) -> str:
    """`tp` in words, for messages: 'an integer', 'one of a, b', 'a list of a number'."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(fmt(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def convert(value: Any, tp: Any, path: str, meta: dict) -> Any:
    """`value` checked against type `tp` and the range rules in `meta`, as that type.

    Raises ConfigError with one line per mistake (a group or a list can hold several)."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return _convert_union(value, tp, path, meta)
    if origin is Literal:
        return _convert_literal(value, tp, path)
    if origin is list:
        return _convert_list(value, tp, path, meta)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a group of keys, not {fmt(value)}")
        return build(tp, value, path)
    return _convert_scalar(value, tp, path, meta)


def _convert_union(value: Any, tp: Any, path: str, meta: dict) -> Any:
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    dataclass_args = [a for a in args if dataclasses.is_dataclass(a)]
    if dataclass_args and isinstance(value, dict):
        return build(dataclass_args[0], value, path)
    if type(value) in (int, float) and type(value) in args:
        # A value of a member's own type is that member: in `int | float` a YAML 1.0 stays a
        # float (Lightning's "all batches") rather than becoming the integer 1 (one batch).
        return convert(value, type(value), path, meta)
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return convert(value, arg, path, meta)
        except ConfigError as e:
            errors.append(e)
    if len(errors) == 1:
        raise errors[0]
    raise ConfigError(f"{path}={fmt(value)} is invalid: expected {type_name(tp)}; set {path}=<value>")


def _convert_literal(value: Any, tp: Any, path: str) -> Any:
    choices = typing.get_args(tp)
    if isinstance(value, int) and not isinstance(value, bool) and str(value) in choices:
        value = str(value)  # trainer.precision=32 arrives from YAML as the integer 32
    if value not in choices:
        hint = did_you_mean(value, choices, prefix=f"{path}=")
        raise ConfigError(
            f"{path}={fmt(value)} is not valid: choose one of {', '.join(map(fmt, choices))}{hint}"
        )
    return value


def _convert_list(value: Any, tp: Any, path: str, meta: dict) -> list:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{path}={fmt(value)} must be a list, e.g. {path}=[1,2]")
    if meta.get("nonempty") and not value:
        raise ConfigError(f"{path} must not be empty; set {path}=[...] with at least one value")
    if "length" in meta and len(value) != meta["length"]:
        raise ConfigError(f"{path} must have exactly {meta['length']} values; got {len(value)}")
    (item_tp,) = typing.get_args(tp)
    items, errors = [], []
    for i, v in enumerate(value):
        try:
            items.append(convert(v, item_tp, f"{path}[{i}]", meta))
        except ConfigError as e:
            errors.extend(e.lines)
    if errors:
        raise config_error(errors)
    return items


def _convert_scalar(value: Any, tp: Any, path: str, meta: dict) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}={fmt(value)} must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if not (isinstance(value, float) and value.is_integer()):
                raise ConfigError(f"{path}={fmt(value)} must be an integer")
            value = int(value)
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}={fmt(value)} must be a number")
        value = float(value)
        if not math.isfinite(value):  # inf and nan pass no range rule meaningfully
            raise ConfigError(f"{path}={fmt(value)} is not a finite number: set {path} to a finite value")
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}={fmt(value)} must be a string")
        if meta.get("nonempty") and not value:
            raise ConfigError(f"{path} must not be empty")
        return value
    check_range(value, path, meta)
    return value


def check_range(value: Any, path: str, meta: dict) -> None:
    """Raise ConfigError when `value` breaks one of the gt/ge/lt/le rules in `meta`."""
    for key, op, words in (
        ("gt", lambda a, b: a > b, "greater than"),
        ("ge", lambda a, b: a >= b, "at least"),
        ("lt", lambda a, b: a < b, "less than"),
        ("le", lambda a, b: a <= b, "at most"),
    ):
        if key in meta and not op(value, meta[key]):
            raise ConfigError(f"{path}={fmt(value)} is out of range: it must be {words} {meta[key]}")


def _unknown_key(path: str, key: Any, names: list[str]) -> str:
    if not path:
        close = close_match(key, sorted(names))
        hint = f"did you mean {close}? " if close else ""
        return f"unknown key '{key}': {hint}top-level keys: {', '.join(sorted(names))}"
    close = close_match(key, names)
    hint = f"did you mean {path}.{close}? " if close else ""
    return f"unknown key '{path}.{key}': {hint}valid keys of {path}: {', '.join(names)}"


def _missing_key(path: str, name: str, tp: Any) -> str:
    if not path and (name in VARIANTS or dataclasses.is_dataclass(tp)):
        return f"config group '{name}' is missing: add {name}=<option>"
    full = f"{path}.{name}" if path else name
    return f"missing key '{full}': add {full}=<value>"


def build(cls: type, data: dict, path: str = "") -> Any:
    """An instance of dataclass `cls` from `data`; ConfigError listing every mistake otherwise.

    `path` is where `data` sits in the whole config ('' for the top level, 'optim', ...).
    At the top level, the sections in VARIANTS are built from the dataclass their key selects."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    errors = [_unknown_key(path, key, list(fields)) for key in data if key not in fields]
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            errors.append(_missing_key(path, name, hints[name]))
            continue
        full = f"{path}.{name}" if path else name
        try:
            if not path and name in VARIANTS:
                kwargs[name] = build_variant(name, data[name])
            else:
                kwargs[name] = convert(data[name], hints[name], full, dict(f.metadata))
                if "parse" in f.metadata:  # a value with a grammar of its own, normalised here
                    kwargs[name] = f.metadata["parse"](kwargs[name], full)
        except ConfigError as e:
            errors.extend(e.lines)
    if errors:
        raise config_error(errors)
    return cls(**kwargs)


def build_variant(section: str, data: Any) -> Any:
    """`data` as the dataclass registered for its option (its `name` or `family` key), or, when
    it has a `_target_`, as the section's TARGETS dataclass."""
    key, options = VARIANTS[section]
    if isinstance(data, dict) and "_target_" in data and section in TARGETS:
        return build_target(section, data)
    if not isinstance(data, dict) or key not in data:
        raise ConfigError(f"{section}.{key} is missing: choose {section}=<option> (see bigtrain --help)")
    choice = data[key]
    if not isinstance(choice, str) or choice not in options:
        close = close_match(choice, options)
        hint = f" (did you mean {close}?)" if close else ""
        raise ConfigError(
            f"{section}.{key}={fmt(choice)} is not supported{hint}: known {key}s are {', '.join(options)}"
        )
    return build(options[choice], data, section)


def build_target(section: str, data: dict) -> Any:
    """A section given by `_target_`: its key says "custom" and every other key, `name` and
    `family` included, is an argument of the target (as for Hydra's instantiate)."""
    target = data["_target_"]
    if not isinstance(target, str) or not target.strip():
        raise ConfigError(
            f"{section}._target_={fmt(target)} must name a class: give its dotted path, e.g. my_pkg.module.Name"
        )
    arguments = {k: v for k, v in data.items() if k != "_target_"}
    return TARGETS[section](**{VARIANTS[section][0]: "custom", "target": target, "arguments": arguments})
