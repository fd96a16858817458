"""Composing conf/ as the command does, and Hydra's errors reworded to one line with a fix.

Hydra's public compose API (`hydra.initialize_config_module` + `hydra.compose`) takes one config
source; the command also takes the user's `--config-dir`, prepended to the search path exactly
as `@hydra.main` does. That needs Hydra's internal `Hydra.create_main_hydra2` and
`create_config_search_path` (listed in docs/architecture.md), and so does parsing the command
line with Hydra's own argument parser (`get_args_parser`), so flags mean what they mean to Hydra.
"""

from __future__ import annotations

import difflib
import itertools
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from bigtrain.config.convert import TARGETS
from bigtrain.config.errors import ConfigError

CONFIG_MODULE = "pkg://bigtrain.conf"
CONFIG_NAME = "train"

# Configs that Hydra plugins ship (the `slurm` extra); conf/hydra/launcher/*.yaml build on them.
PLUGIN_CONFIGS = {
    "hydra/launcher/submitit_slurm": "hydra-submitit-launcher",
    "hydra/launcher/joblib": "hydra-joblib-launcher",
    "hydra/sweeper/optuna": "hydra-optuna-sweeper",
}


class UsageError(ConfigError):
    """A composition error, reworded to one line (a ConfigError: one line, exit 2)."""


def parse_args(argv: Sequence[str]) -> Any:
    """The command line as Hydra's own parser reads it (flags, overrides)."""
    from hydra._internal.utils import get_args_parser

    return get_args_parser().parse_args(list(argv))


def make_hydra(config_dir: str | None) -> Any:
    """A Hydra instance over conf/ with the user's --config-dir in front, as the command has."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra

    search_path = create_config_search_path(CONFIG_MODULE)
    if config_dir is not None:
        path = os.path.abspath(config_dir)
        if not os.path.isdir(path):
            raise UsageError(
                f"--config-dir {config_dir} is not a directory: give the folder that holds your configs"
            )
        search_path.prepend(provider="command-line", path=f"file://{path}")
    GlobalHydra.instance().clear()
    return Hydra.create_main_hydra2(task_name="bigtrain", config_search_path=search_path)


def compose(
    overrides: Sequence[str] = (),
    config_dir: str | None = None,
    config_name: str = CONFIG_NAME,
    with_hydra: bool = False,
) -> DictConfig:
    """Compose the config as `bigtrain OVERRIDES` would; errors are raised as UsageError."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    overrides = trainer_flags(overrides)
    h = make_hydra(config_dir)
    try:
        cfg = h.compose_config(config_name, overrides, run_mode=RunMode.RUN, with_log_configuration=False)
    except Exception as e:  # Hydra's and OmegaConf's own exceptions
        raise UsageError(_one_line(e, h, overrides, config_dir)) from e
    finally:
        GlobalHydra.instance().clear()
    if not with_hydra:
        with open_dict(cfg):
            del cfg["hydra"]
    return cfg


def trainer_flags(overrides: Sequence[str]) -> list[str]:
    """`trainer.NAME=value` as `++trainer.NAME=value` where bigtrain's trainer schema does not
    list NAME: Hydra adds the key (a plain `trainer.NAME=` of a key no YAML file has is an error)
    where `+trainer.NAME=` puts it, and validation holds NAME to Lightning's Trainer arguments and
    moves it into trainer.lightning, or refuses it in one line (config/trainer_args.py). Only a
    plain change of a `trainer.NAME` key is rewritten, its value kept as typed (quotes, sweeps);
    the command line is rewritten before Hydra sees it (cli/precheck.expand_resume), so the
    overrides a run saves compose the same config on resume."""
    if not any(o.startswith("trainer.") for o in overrides):
        return list(overrides)
    import dataclasses

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    from bigtrain.config import TrainerConfig

    listed = {f.name for f in dataclasses.fields(TrainerConfig)}
    parser = OverridesParser.create()
    out = []
    for override in overrides:
        if override.startswith("trainer."):
            try:
                parsed = parser.parse_override(override)
            except Exception:  # Hydra's parse error: compose reports it in one line
                parsed = None
            if (
                parsed is not None
                and parsed.type == OverrideType.CHANGE
                and parsed.package is None
                and parsed.key_or_group.count(".") == 1
                and parsed.key_or_group.split(".")[1] not in listed
            ):
                override = "++" + override
        out.append(override)
    return out


def group_options(h: Any, group: str) -> list[str]:
    """Every option of `group`, nested ones as 'mlp/tiny'."""
    loader = h.config_loader
    options = list(loader.get_group_options(group))
    for sub in sorted(loader.list_groups(group)):
        options += [f"{sub}/{o}" for o in group_options(h, f"{group}/{sub}")]
    return options


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """Expand a command-line grid (a=1,2 b=x,y) into one override list per job, in the order
    Hydra's basic sweeper runs them (the last key varies fastest)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    choices = []
    for o in OverridesParser.create().parse_overrides(overrides):
        key = o.get_key_element()
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        choices.append([f"{key}={v}" for v in values])
    return [list(job) for job in itertools.product(*choices)]


def _one_line(e: Exception, h: Any, overrides: Sequence[str], config_dir: str | None) -> str:
    """Hydra's multi-line messages, reduced to what is wrong and how to fix it."""
    from hydra.errors import MissingConfigException, OverrideParseException

    text = str(e).strip()
    missing = getattr(e, "missing_cfg_file", None) if isinstance(e, MissingConfigException) else None
    if missing in PLUGIN_CONFIGS:
        return f"{missing} comes from the package {PLUGIN_CONFIGS[missing]}, which is not installed: pip install 'bigtrain[slurm]'"
    if missing and "/" in missing:
        # Hydra's own groups nest (hydra/launcher/NAME); ours name sizes (model=mlp/tiny).
        group, name = missing.rsplit("/", 1) if missing.startswith("hydra/") else missing.split("/", 1)
        opts = group_options(h, group)
        close = difflib.get_close_matches(name, opts, n=1)
        hint = f"did you mean {group}={close[0]}? " if close else ""
        return f"unknown option {group}={name}: {hint}choose one of {', '.join(opts)}"
    if isinstance(e, OverrideParseException):
        return f"{text.splitlines()[0]}: write overrides as key=value (quote values with spaces)"
    if text.startswith("Could not override '"):
        key = text.split("'")[1]
        cause = str(e.__cause__ or "")
        if "not in struct" in cause or "Could not find" in text or "No match" in text:
            return unknown_key(key, overrides, config_dir)
    if text.startswith("Could not append to config. An item is already at '"):
        key = text.split("'")[1]
        return f"{key} already exists: write {key}=... without the +"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return "; ".join(lines[:3])


def unknown_key(key: str, overrides: Sequence[str], config_dir: str | None) -> str:
    """'unknown key X (did you mean Y?)', with the valid keys of X's parent."""
    rest = [o for o in overrides if not o.lstrip("+~").startswith(key + "=")]
    parent, _, leaf = key.rpartition(".")
    if leaf == "_target_" and parent in TARGETS:  # a class of yours, on a preset of ours
        return (
            f"unknown key '{key}': a {parent} of yours replaces the preset: "
            f"{parent}=target {key}=... (its arguments: +{parent}.NAME=value; docs/extending.md)"
        )
    node = None
    try:
        base = compose(rest, config_dir)
        node = OmegaConf.select(base, parent) if parent else base
        keys = [str(k) for k in node] if isinstance(node, DictConfig) else []
    except UsageError:
        keys = []
    if isinstance(node, DictConfig) and not keys:  # an empty mapping (trainer.lightning: {})
        return f"unknown key '{key}': {parent} is empty: add the key with +{key}=..."
    close = difflib.get_close_matches(leaf, keys, n=1)
    hint = f"did you mean {parent + '.' if parent else ''}{close[0]}? " if close else ""
    valid = f"valid keys{' of ' + parent if parent else ''}: {', '.join(keys)}" if keys else ""
    return f"unknown key '{key}': {hint}{valid}"


# What a Transformer needs when the command line does not say: text and language-model metrics.
LM_IMPLIED = {"data": "stdlib_text", "metrics": "lm"}
LM_DATA = ("text", "stdlib_text", "tokens")
LM_METRICS = {"acc", "ppl", "bpb"}


def _language_model(model: Any) -> bool:
    """Whether a composed (unvalidated) model section is of a family that takes token windows
    (its record, models/family.py); an unknown family is left to validation."""
    from bigtrain.models.family import BUILT_IN, family

    name = model.get("family") if hasattr(model, "get") else None
    return name in BUILT_IN and family(name).language_model


def _given(overrides: Sequence[str]) -> set[str]:
    return {o.lstrip("+~").split("=", 1)[0] for o in overrides}


def implied_overrides(cfg: DictConfig, overrides: Sequence[str]) -> list[str]:
    """Overrides a language model implies and the command line left open: a model=gpt/* or
    llama/* run on the default (non-text) data gets byte-level standard-library text and LM
    metrics, and a window that fits the model's context. Anything the user set stays as set."""
    model, data = cfg.get("model", {}), cfg.get("data", {})
    if not _language_model(model):
        return []
    given = _given(overrides)
    extra = []
    if data.get("name") not in LM_DATA and "data" not in given:
        extra.append(f"data={LM_IMPLIED['data']}")
    names = set(cfg.get("metrics", {}).get("names", []))
    if not names <= LM_METRICS and not {"metrics", "metrics.names"} & given:
        extra.append(f"metrics={LM_IMPLIED['metrics']}")
    return extra


def fit_window(cfg: DictConfig, overrides: Sequence[str]) -> list[str]:
    """`data.seq_len=<model.max_seq_len>` where the data's default window is longer than the
    model's context and the user did not choose the window."""
    model, data = cfg.get("model", {}), cfg.get("data", {})
    if not _language_model(model) or data.get("name") not in LM_DATA:
        return []
    seq_len, context = data.get("seq_len"), model.get("max_seq_len")
    fits = not (isinstance(seq_len, int) and isinstance(context, int) and seq_len > context)
    return [] if fits or "data.seq_len" in _given(overrides) else [f"data.seq_len={context}"]


def weights_tokenizer(cfg: DictConfig, overrides: Sequence[str]) -> list[str]:
    """`data.tokenizer=<init_from>/tokenizer.json` where the weights a run starts from have their
    tokenizer beside them, the data is text and the user chose no tokenizer: the vocabulary the
    weights were trained with."""
    model, data = cfg.get("model", {}), cfg.get("data", {})
    folder = model.get("init_from") if _language_model(model) else None
    if not folder or data.get("name") not in ("text", "stdlib_text") or data.get("tokenizer") is not None:
        return []
    path = Path(str(folder)) / "tokenizer.json"
    if not path.is_file() or "data.tokenizer" in _given(overrides):
        return []
    value = str(path)
    if not re.fullmatch(r"[\w./-]+", value):  # spaces and the like: a quoted Hydra string
        value = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return [f"data.tokenizer={value}"]


def folder_model(cfg: DictConfig, overrides: Sequence[str]) -> list[str]:
    """`model.KEY=VALUE` for each model key the user did not type, from the `model.init_from`
    folder's config.json, where the model group's choice is `hf` (transformer_record.from_folder;
    conf/model/hf.yaml's own values are placeholders). UsageError, one line each, where there
    is no folder, it cannot be read, or a key the user typed disagrees with it."""
    from bigtrain.models.transformer_record import FOLDER_KEYS, PRESET, from_folder

    model = cfg.get("model")
    if OmegaConf.select(cfg, "hydra.runtime.choices.model") != PRESET or not isinstance(model, DictConfig):
        return []
    given = _given(overrides)
    fill = [k for k in FOLDER_KEYS if f"model.{k}" not in given]
    if not fill:  # every key typed (a resume replays them): validation holds them to the folder
        return []
    folder = model.get("init_from")  # None where it is ??? too
    if folder is None:
        raise UsageError(
            f"model={PRESET} takes the model's {len(FOLDER_KEYS)} shape keys from a Hugging Face folder's "
            "config.json: add model.init_from=FOLDER"
        )
    from bigtrain.config import fmt

    typed = {k: model.get(k) for k in FOLDER_KEYS if k not in fill}
    values, problems = from_folder(str(folder), fill, typed)
    if problems:
        raise UsageError("\n".join(problems))
    return [f"model.{k}={fmt(v)}" for k, v in values.items()]


def check_trust_typed(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """UsageError when a trust flag is true but no override sets it: a YAML file (an experiment,
    a --config-dir preset) said so, and only the command line may (docs/reliability.md)."""
    from bigtrain.runs.rundir import TRUST_KEYS

    given = _given(overrides)
    for key in TRUST_KEYS:
        if cfg.get(key) is True and key not in given:
            raise UsageError(
                f"{key}=true is set by a config file, and a trust flag counts only when typed: remove it "
                f"from the file and add {key}=true to the command if you trust what it allows"
            )


def compose_run(
    overrides: Sequence[str],
    config_dir: str | None = None,
    config_name: str = CONFIG_NAME,
    with_hydra: bool = False,
) -> tuple[DictConfig, list[str]]:
    """compose() plus what a language model implies: (the config, the overrides added).

    A group a language model implies (data, metrics) needs a second composition; a value it
    implies (the shape a model=hf folder gives, the window, the tokenizer) is set on the
    composed config as the override would set it, and recorded among the overrides Hydra saves."""
    cfg = compose(overrides, config_dir, config_name, with_hydra=True)  # its group choices
    check_trust_typed(cfg, overrides)
    added = implied_overrides(cfg, overrides)
    if added:
        cfg = compose([*overrides, *added], config_dir, config_name, with_hydra=True)
    values = _set(cfg, folder_model(cfg, overrides), with_hydra)  # first: the window fits its context
    given = [*overrides, *added, *values]
    values += _set(cfg, fit_window(cfg, given) + weights_tokenizer(cfg, given), with_hydra)
    if not with_hydra:
        with open_dict(cfg):
            del cfg["hydra"]
    return cfg, added + values


def _set(cfg: DictConfig, values: list[str], with_hydra: bool) -> list[str]:
    """Set implied values on the composed config as their overrides would set them, and record
    them among the overrides Hydra saves (a resume replays them)."""
    for override in values:
        key, value = override.split("=", 1)
        OmegaConf.update(cfg, key, _value_of(cfg, key, value))
        if with_hydra:
            with open_dict(cfg):
                cfg.hydra.overrides.task.append(override)
    return values


def _value_of(cfg: DictConfig, key: str, value: str) -> Any:
    """An override's value as Hydra would parse it (a quoted path, an integer)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_override(f"{key}={value}")
    return parsed.value()
