"""Before Hydra writes anything: a resume expanded, every job composed and validated once, and
its output folder checked (writable, free, not another run's)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from bigtrain.runs.compose import (
    CONFIG_NAME,
    UsageError,
    compose,
    compose_run,
    parse_args,
    sweep_jobs,
    trainer_flags,
)


def expand_resume(argv: Sequence[str]) -> list[str]:
    """`resume=DIR [overrides]` -> the saved overrides of DIR, the new ones, hydra.run.dir=DIR.
    First, every `trainer.NAME=value` whose NAME bigtrain's trainer schema does not list becomes
    `++trainer.NAME=value` (runs/compose.trainer_flags: a Lightning Trainer argument), so that
    Hydra's own composition (--cfg, --multirun) and the saved overrides take it too.

    The run directory is data: its overrides are replayed without trust flags or hydra.*
    settings, the --config-dir is the one typed now, and a `_target_` outside bigtrain in the
    result needs trust_code=true typed now (targets/trust.py)."""
    from bigtrain.runs.compose import check_trust_typed
    from bigtrain.runs.rundir import (
        RunDirError,
        check_same_config,
        find_resume,
        override_key,
        resume_overrides,
    )
    from bigtrain.targets.trust import check_trusted

    args = parse_args(argv)
    if not args.shell_completion:
        flags = dict(zip(args.overrides, trainer_flags(args.overrides), strict=True))
        argv = [flags.get(a, a) for a in argv]
        args.overrides = [flags[o] for o in args.overrides]
    run_dir = find_resume(list(args.overrides))
    if run_dir is None or args.help or args.hydra_help or args.info or args.shell_completion:
        return list(argv)
    if args.multirun:
        raise UsageError(f"resume={run_dir} continues one run: drop --multirun")
    try:
        overrides, config_dir = resume_overrides(run_dir, list(args.overrides), args.config_dir)
        composed = compose(overrides, config_dir, args.config_name or CONFIG_NAME)
        check_trust_typed(composed, overrides)
        check_trusted(
            OmegaConf.to_container(composed),
            composed.get("trust_code") is True,
            f"resume={run_dir}",
            "trust_code=true",
        )
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
    """(key, path) of the folder Hydra will create, or None where it cannot be resolved yet;
    UsageError for an empty or unresolvable folder, or a config copy outside it."""
    from bigtrain.runs.rundir import RunDirError, check_output_subdir, output_dir

    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    try:
        check_output_subdir(cfg)
        value = output_dir(cfg, key)
    except RunDirError as e:
        raise UsageError(str(e)) from e
    return None if value is None else (key, value)


@dataclass
class Checked:
    """What precheck learned about a single run: its config (no hydra node), the validated
    RunConfig, the run directory (None where only Hydra's runtime can resolve it), the group
    choices, and the overrides a language model implied."""

    cfg: DictConfig
    run: Any
    run_dir: str | None
    choices: dict
    added: list[str]
    composed: DictConfig | None = None  # cfg with its hydra node: what the run is started from


def precheck(argv: Sequence[str]) -> Checked | None:
    """Compose and validate what `bigtrain argv` would run; raise UsageError or ConfigError.
    Returns what it found for a single run, None for a multirun or an informational flag."""
    from bigtrain.cluster.submit import launcher_problem
    from bigtrain.runs.lock import check_free
    from bigtrain.runs.rundir import RunDirError, check_run_files, check_writable
    from bigtrain.runs.validate import validate

    args = parse_args(argv)
    if args.help or args.hydra_help or args.cfg or args.info or args.shell_completion or args.resolve:
        return None
    overrides = list(args.overrides)
    jobs = [overrides]
    if args.multirun:
        try:
            jobs = sweep_jobs(overrides)
        except Exception:
            return None  # a sweeper-specific syntax (interval(), tag()...): each job validates itself
    # A grid's jobs compose as Hydra's sweeper will: without implied overrides (see main).
    compose_job = _compose_plain if args.multirun else compose_run
    for job in jobs:
        cfg, added = compose_job(job, args.config_dir, args.config_name or CONFIG_NAME, with_hydra=True)
        out = _output_dir(cfg, args.multirun)
        choices = dict(OmegaConf.to_container(cfg.hydra.runtime.choices))
        launcher = OmegaConf.select(cfg, "hydra.launcher._target_", default=None)
        composed, cfg = cfg, copy.deepcopy(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        run = validate(cfg)
        if args.multirun and (line := launcher_problem(launcher, run.dry_run)):
            raise UsageError(line)  # before Hydra makes the sweep folder
        if out is not None:
            try:
                check_writable(out[1], what=out[0])
                check_free(out[1])  # a live run owns it: refused before Hydra writes into it
                check_run_files(Path(out[1]), what=out[0])
                _check_not_taken(out, run, args.multirun, choices)
            except RunDirError as e:
                raise UsageError(str(e)) from e
    if args.multirun:
        return None
    return Checked(cfg, run, None if out is None else out[1], choices, added, composed)


def _check_not_taken(out: tuple[str, str], run: Any, multirun: bool, choices: dict) -> None:
    """A new run (or sweep) must not write into a folder that holds an earlier one; resume=, a
    SLURM job's own folder after a requeue, and an Optuna sweep (which resumes its study) may."""
    from bigtrain.cluster.slurm import is_this_jobs_dir
    from bigtrain.runs.paths import check_new_run, check_new_sweep
    from bigtrain.util import is_rank_zero

    key, folder = out
    if not is_rank_zero() or is_this_jobs_dir(folder):
        return  # the other ranks join rank zero's folder; a requeued job goes on in its own
    if multirun:
        if choices.get("hparams_search") is None:
            check_new_sweep(Path(folder), key)
    elif run.resume is None:
        check_new_run(Path(folder), key, run.overwrite, run.dry_run)


def _compose_plain(job, config_dir, config_name, with_hydra):
    return compose(job, config_dir, config_name, with_hydra=with_hydra), []
