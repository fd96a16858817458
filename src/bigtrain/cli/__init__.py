"""The `bigtrain` command: Hydra composes conf/ (plus the user's --config-dir) into one config.

Before Hydra creates a run directory, `precheck` composes the same config (every job of a
multirun grid), validates it against the schemas in config.py and checks that the output
directory can be written, so that a bad override ends with one line and exit code 2 in well
under a second, and nothing is written. Only after that are torch and Lightning imported.

`bigtrain resume=RUN_DIR [overrides]` is rewritten first into the command line that continues
that run in its own directory (see rundir.py).
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Sequence
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

import bigtrain.cluster.slurm  # noqa: F401  (registers the ${bigtrain.*} resolvers that conf/ uses)

CONFIG_MODULE = "pkg://bigtrain.conf"
CONFIG_NAME = "train"
EXIT_CONFIG_ERROR = 2
EXIT_TRAINING_STOPPED = 3  # the non-finite loss policy ended training


# Configs that Hydra plugins ship (the `slurm` extra); conf/hydra/launcher/*.yaml build on them.
PLUGIN_CONFIGS = {
    "hydra/launcher/submitit_slurm": "hydra-submitit-launcher",
    "hydra/launcher/joblib": "hydra-joblib-launcher",
    "hydra/sweeper/optuna": "hydra-optuna-sweeper",
}


class UsageError(Exception):
    """A composition error, reworded to one line."""


# --------------------------------------------------------------------------- composition


def _hydra(config_dir: str | None):
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

    h = _hydra(config_dir)
    try:
        cfg = h.compose_config(
            config_name, list(overrides), run_mode=RunMode.RUN, with_log_configuration=False
        )
    except Exception as e:  # Hydra's and OmegaConf's own exceptions
        raise UsageError(_one_line(e, h, overrides, config_dir)) from e
    finally:
        GlobalHydra.instance().clear()
    if not with_hydra:
        with open_dict(cfg):
            del cfg["hydra"]
    return cfg


def group_options(h: Any, group: str) -> list[str]:
    """Every option of `group`, nested ones as 'mlp/tiny'."""
    loader = h.config_loader
    options = list(loader.get_group_options(group))
    for sub in sorted(loader.list_groups(group)):
        options += [f"{sub}/{o}" for o in group_options(h, f"{group}/{sub}")]
    return options


def print_help(overrides: Sequence[str], config_dir: str | None) -> None:
    """`bigtrain --help`: Hydra's help template, filled from one config repository.

    Hydra's own --help rebuilds and deep-copies its config repository for every one of the ~150
    groups (seconds); reading the groups straight from the config sources takes milliseconds.
    """
    from hydra.core.object_type import ObjectType

    cfg = compose(overrides, config_dir, with_hydra=True)
    repo = _hydra(config_dir).config_loader.repository

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


def _one_line(e: Exception, h: Any, overrides: Sequence[str], config_dir: str | None) -> str:
    """Hydra's multi-line messages, reduced to what is wrong and how to fix it."""
    from hydra.errors import MissingConfigException, OverrideParseException

    text = str(e).strip()
    if isinstance(e, MissingConfigException) and e.missing_cfg_file in PLUGIN_CONFIGS:
        return (
            f"{e.missing_cfg_file} comes from the package {PLUGIN_CONFIGS[e.missing_cfg_file]}, "
            "which is not installed: pip install 'bigtrain[slurm]'"
        )
    if isinstance(e, MissingConfigException) and e.missing_cfg_file and "/" in e.missing_cfg_file:
        # Hydra's own groups nest (hydra/launcher/NAME); ours name sizes (model=mlp/tiny).
        split = (
            e.missing_cfg_file.rsplit if e.missing_cfg_file.startswith("hydra/") else e.missing_cfg_file.split
        )
        group, name = split("/", 1)
        opts = group_options(h, group)
        close = difflib.get_close_matches(name, opts, n=1)
        hint = f"did you mean {group}={close[0]}? " if close else ""
        return f"unknown option {group}={name}: {hint}choose one of {', '.join(opts)}"
    if isinstance(e, OverrideParseException):
        first = text.splitlines()[0]
        return f"{first}: write overrides as key=value (quote values with spaces)"
    if text.startswith("Could not override '"):
        key = text.split("'")[1]
        cause = str(e.__cause__ or "")
        if "not in struct" in cause or "Could not find" in text or "No match" in text:
            return _unknown_key(key, overrides, config_dir)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return "; ".join(lines[:3])


def _unknown_key(key: str, overrides: Sequence[str], config_dir: str | None) -> str:
    """'unknown key X (did you mean Y?)', with the valid keys of X's parent."""
    rest = [o for o in overrides if not o.lstrip("+~").startswith(key + "=")]
    parent, _, leaf = key.rpartition(".")
    try:
        base = compose(rest, config_dir)
        node = OmegaConf.select(base, parent) if parent else base
        keys = list(node.keys()) if isinstance(node, DictConfig) else []
    except UsageError:
        keys = []
    close = difflib.get_close_matches(leaf, [str(k) for k in keys], n=1)
    hint = f"did you mean {parent + '.' if parent else ''}{close[0]}? " if close else ""
    valid = f"valid keys{' of ' + parent if parent else ''}: {', '.join(map(str, keys))}; " if keys else ""
    return f"unknown key '{key}': {hint}{valid}to add a new key write +{key}=..."


def _sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """Expand a command-line grid (a=1,2 b=x,y) into one override list per job."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]


def expand_resume(argv: Sequence[str]) -> list[str]:
    """`resume=DIR [overrides]` -> the saved overrides of DIR, the new ones, hydra.run.dir=DIR."""
    from bigtrain.runs.rundir import (
        RunDirError,
        check_same_config,
        find_resume,
        override_key,
        resume_overrides,
    )

    args = hydra._internal.utils.get_args_parser().parse_args(list(argv))
    run_dir = find_resume(list(args.overrides))
    if run_dir is None or args.help or args.hydra_help or args.info or args.shell_completion:
        return list(argv)
    if args.multirun:
        raise UsageError(f"resume={run_dir} continues one run: drop --multirun")
    try:
        overrides, saved_config_dir = resume_overrides(run_dir, list(args.overrides))
        config_dir = args.config_dir or saved_config_dir
        composed = compose(overrides, config_dir, args.config_name or CONFIG_NAME)
        changed = {override_key(o) for o in args.overrides}
        check_same_config(run_dir, composed, changed)
    except RunDirError as e:
        raise UsageError(str(e)) from e
    flags = ["--config-dir", config_dir] if config_dir else []
    flags += ["--config-name", args.config_name] if args.config_name else []
    flags += ["--cfg", args.cfg] if args.cfg else []
    pinned = overrides[-1].replace("resume=", "hydra.run.dir=", 1)  # the same quoted path
    return [*flags, *overrides, pinned]


def _output_dir(cfg: DictConfig, multirun: bool) -> tuple[str, str] | None:
    """(key, path) of the folder Hydra will create, or None where it cannot be resolved yet."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    try:
        value = OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
    except Exception:  # an interpolation only Hydra's runtime can resolve: checked at train time
        return None
    return (key, str(value)) if value else None


def precheck(argv: Sequence[str]) -> tuple[DictConfig, Any, str | None] | None:
    """Compose and validate what `bigtrain argv` would run; raise UsageError or ConfigError.
    For a single run: (its config without the hydra node, the validated RunConfig, its run
    directory or None where only Hydra's runtime can resolve it); None otherwise."""
    from bigtrain.checks import validate
    from bigtrain.runs.rundir import RunDirError, check_writable

    args = hydra._internal.utils.get_args_parser().parse_args(list(argv))
    if args.help or args.hydra_help or args.cfg or args.info or args.shell_completion or args.resolve:
        return None
    overrides = list(args.overrides)
    jobs = [overrides]
    if args.multirun:
        try:
            jobs = _sweep_jobs(overrides)
        except Exception:
            return None  # a sweeper-specific syntax (interval(), tag()...): each job validates itself
    for job in jobs:
        cfg = compose(job, args.config_dir, args.config_name or CONFIG_NAME, with_hydra=True)
        out = _output_dir(cfg, args.multirun)
        with open_dict(cfg):
            del cfg["hydra"]
        run = validate(cfg)
        if out is not None:
            try:
                check_writable(out[1], what=out[0])
            except RunDirError as e:
                raise UsageError(str(e)) from e
    return None if args.multirun else (cfg, run, None if out is None else out[1])


# --------------------------------------------------------------------------- the run


def print_config_tree(cfg: DictConfig) -> None:
    """The resolved config as a rich tree, one branch per group."""
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.tree import Tree

    def yaml(node: Any) -> Syntax:
        text = OmegaConf.to_yaml(node, resolve=True).rstrip()
        return Syntax(text, "yaml", theme="ansi_dark", background_color="default")

    tree = Tree("config", guide_style="dim")
    scalars = {k: v for k, v in cfg.items() if not isinstance(v, DictConfig)}
    tree.add("run", style="bold").add(yaml(OmegaConf.create(scalars)))
    for key, value in cfg.items():
        if isinstance(value, DictConfig):
            tree.add(str(key), style="bold").add(yaml(value))
    Console().print(tree)


def _rank() -> int:
    """This process's global rank, from the launcher's environment (0 when run alone)."""
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if key in os.environ:
            return int(os.environ[key])
    return 0


def _fail(message: str) -> None:
    """Exit 2 with one `bigtrain: error:` line per mistake in `message` (one per line)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise
    for line in message.splitlines() or [message]:
        sys.stderr.write(f"bigtrain: error: {line}\n")
    sys.exit(EXIT_CONFIG_ERROR)


def _dry_run(cfg: DictConfig, run: Any, run_dir: str) -> None:
    """The plan alone: no Lightning, no data, no weights; plan.json in the run directory."""
    from bigtrain.runs.plan import run_plan

    if run.callbacks.print_config and _rank() == 0:
        print_config_tree(cfg)
    run_plan(run, run_dir, _rank())


@hydra.main(version_base="1.3", config_path=CONFIG_MODULE, config_name=CONFIG_NAME)
def _task(cfg: DictConfig) -> Any:
    from hydra.core.hydra_config import HydraConfig

    from bigtrain.checks import validate
    from bigtrain.config import ConfigError

    try:
        run = validate(cfg)
    except ConfigError as e:
        _fail(str(e))
    run_dir = HydraConfig.get().runtime.output_dir

    if run.dry_run:  # a dry run whose run directory only Hydra's runtime could resolve
        _dry_run(cfg, run, run_dir)
        return None
    from pytorch_lightning.utilities import rank_zero_only

    from bigtrain.runs.train import train

    if run.callbacks.print_config and rank_zero_only.rank == 0:
        print_config_tree(cfg)
    from bigtrain.callbacks.nan_policy import NonFiniteLossError

    try:
        results = train(run, run_dir)
    except ConfigError as e:
        _fail(str(e))
    except NonFiniteLossError as e:  # results.json is written; one line, no traceback
        sys.stderr.write(f"bigtrain: stopped: {e}\n")
        sys.exit(EXIT_TRAINING_STOPPED)
    # Sweepers (Optuna) minimise or maximise what the task returns: the monitored value.
    monitor = run.callbacks.checkpoint.monitor.split("/", 1)
    return results.get(monitor[0], {}).get(monitor[1]) if len(monitor) == 2 else None


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `bigtrain` command (and `python -m bigtrain`)."""
    from bigtrain.config import ConfigError

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = expand_resume(argv)
        args = hydra._internal.utils.get_args_parser().parse_args(argv)
        if args.help and not (args.hydra_help or args.cfg or args.info or args.shell_completion):
            print_help(list(args.overrides), args.config_dir)
            return
        single = precheck(argv)
    except (UsageError, ConfigError) as e:
        _fail(str(e))
    if single is not None and single[1].dry_run and single[2] is not None:
        # The plan needs nothing from Hydra's runtime: it is computed from the config just
        # composed and validated, without composing it twice more (about a second).
        _dry_run(*single)
        return
    sys.argv = [sys.argv[0], *argv, *_rank_overrides(argv)]
    _task()


def _rank_overrides(argv: Sequence[str]) -> list[str]:
    """Under torchrun or srun every process runs this command. Ranks above zero must not write
    the run directory's .hydra/ copy nor append to rank zero's log: the same overrides Lightning
    gives the processes it launches itself. (All ranks need the same hydra.run.dir.)"""
    rank = os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))
    if rank == "0" or any(a.startswith(("hydra.output_subdir=", "hydra.job.name=")) for a in argv):
        return []
    return ["hydra.output_subdir=null", f"hydra.job.name=bigtrain_rank{rank}"]
