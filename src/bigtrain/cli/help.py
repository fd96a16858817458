"""What the command prints about a config: `--help`, the config tree at the start of a run, and
shell completion of group options."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from bigtrain.runs.compose import compose, group_options, make_hydra

# Groups that are not in the primary defaults list (appended with +) or belong to Hydra.
NOT_DEFAULT_GROUPS = ("hydra", "experiment", "debug", "hparams_search")


def print_help(overrides: Sequence[str], config_dir: str | None) -> None:
    """`bigtrain --help`: Hydra's help template, filled from one config repository.

    Hydra's own --help rebuilds and deep-copies its config repository for every one of the ~150
    groups (seconds); reading the groups straight from the config sources takes milliseconds.
    """
    from hydra.core.object_type import ObjectType

    cfg = compose(overrides, config_dir, with_hydra=True)
    repo = make_hydra(config_dir).config_loader.repository

    def groups(parent: str) -> list[str]:
        found = []
        for name in repo.get_group_options(parent, results_filter=ObjectType.GROUP):
            path = f"{parent}/{name}" if parent else name
            if path != "hydra":
                found += [path, *groups(path)]
        return found

    lines = []
    for group in sorted(groups("")):
        options = repo.get_group_options(group, results_filter=ObjectType.CONFIG)
        if options:
            lines.append(f"{group}: {', '.join(options)}")
    text = str(cfg.hydra.help.template)  # header and footer are interpolated into it here
    with open_dict(cfg):
        del cfg["hydra"]
    text = text.replace("$APP_CONFIG_GROUPS", "\n".join(lines)).replace("$CONFIG", OmegaConf.to_yaml(cfg))
    print(text)


def chosen_groups(choices: Mapping[str, Any]) -> dict[str, str]:
    """The group options a run uses (`model: mlp/small`), from Hydra's runtime choices."""
    return {
        str(group): str(option)
        for group, option in choices.items()
        if option is not None and not str(group).startswith("hydra")
    }


def changed_values(
    cfg: DictConfig, choices: Mapping[str, str], overrides: Sequence[str], config_dir: str | None
) -> dict[str, Any]:
    """The values an appended group (`+experiment=`, `+debug=`) and the command line's key=value
    overrides set, as dotted keys with the values the run has. Read from those files and the
    overrides alone: no second composition of the config at start-up."""
    keys: list[str] = []
    for group, option in choices.items():
        if group in NOT_DEFAULT_GROUPS and group != "hydra" and option is not None:
            keys += _leaves(OmegaConf.to_container(_raw_config(f"{group}/{option}", config_dir)))
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if "=" in override and key not in choices and not override.startswith("~"):
            keys.append(key)
    absent = object()
    changed = {}
    for key in dict.fromkeys(keys):
        value = OmegaConf.select(cfg, key, default=absent)
        if value is not absent:
            changed[key] = (
                OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
            )
    return changed


def _raw_config(path: str, config_dir: str | None) -> DictConfig:
    """One group option's YAML as written (its defaults list dropped), from the first config
    source that has it: the user's --config-dir before conf/ (Hydra's ConfigSource API)."""
    from hydra.core.global_hydra import GlobalHydra

    try:
        for source in make_hydra(config_dir).config_loader.get_sources():
            if source.is_config(path):
                raw = source.load_config(path).config
                with open_dict(raw):
                    raw.pop("defaults", None)
                return raw
    finally:
        GlobalHydra.instance().clear()
    return OmegaConf.create({})


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of every leaf of a nested container."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_leaves(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def print_config_tree(
    cfg: DictConfig,
    choices: Mapping[str, Any] | None = None,
    full: bool = False,
    config_dir: str | None = None,
    overrides: Sequence[str] = (),
) -> None:
    """The config at the start of a run: with `full`, every resolved value as a tree, one branch
    per group; otherwise the chosen group options and the values that differ from them (a
    handful of lines instead of about 200)."""
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.tree import Tree

    def yaml(node: Any) -> Syntax:
        text = OmegaConf.to_yaml(node, resolve=True).rstrip()
        return Syntax(text, "yaml", theme="ansi_dark", background_color="default")

    tree = Tree("config", guide_style="dim")
    if full or choices is None:
        scalars = {k: v for k, v in cfg.items() if not isinstance(v, DictConfig)}
        tree.add("run", style="bold").add(yaml(OmegaConf.create(scalars)))
        for key, value in cfg.items():
            if isinstance(value, DictConfig):
                tree.add(str(key), style="bold").add(yaml(value))
    else:
        groups = chosen_groups(choices)
        tree.add("groups", style="bold").add(yaml(OmegaConf.create(groups)))
        changed = changed_values(cfg, groups, overrides, config_dir)
        if changed:
            tree.add("changed values", style="bold").add(yaml(OmegaConf.create(changed)))
        tree.add("every value: bigtrain --cfg job, or callbacks.print_config=full", style="dim")
    Console().print(tree)


def complete_group_option(config_dir: str | None = None) -> bool:
    """Bash completion of `group=` words with the group's options, nested presets included
    (`model=` -> model=mlp/small model=gpt/125m ...), printed as Hydra's completion prints them.
    Returns False where Hydra's own completion should answer (keys, values, flags)."""
    words = shlex.split(os.environ.get("COMP_LINE", ""))
    line = os.environ.get("COMP_LINE", "")
    word = "" if not words or line.endswith(" ") else words[-1]
    if "=" not in word or "." in word.split("=", 1)[0]:
        return False
    key, typed = word.split("=", 1)
    group = key.lstrip("+~")
    h = make_hydra(config_dir)
    try:
        options = group_options(h, group)
    finally:
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()
    if not options:
        return False
    print(" ".join(f"{key}={o}" for o in sorted(options) if o.startswith(typed)))
    return True
