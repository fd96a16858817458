"""The `bigtrain` command: Hydra composes conf/ (plus the user's --config-dir) into one config.

Before Hydra creates a run directory, `precheck` composes the same config (every job of a
multirun grid), validates it (bigtrain.checks) and checks that the output directory can be
written, so that a bad override ends with one line per mistake and exit code 2 in well under a
second, and nothing is written. Only after that are torch and Lightning imported.

`bigtrain resume=RUN_DIR [overrides]` is rewritten first into the command line that continues
that run in its own directory (see runs/rundir.py).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

import bigtrain.cluster.slurm  # noqa: F401  (registers the ${bigtrain.*} resolvers that conf/ uses)
from bigtrain.cli.compose import (
    CONFIG_MODULE,
    CONFIG_NAME,
    UsageError,
    compose,
    compose_run,
    parse_args,
    sweep_jobs,
)
from bigtrain.cli.help import complete_group_option, print_config_tree, print_help

EXIT_CONFIG_ERROR = 2
TOOLS = ("eval", "predict")  # subcommands (cli/tools.py); anything else is Hydra's command line
EXIT_TRAINING_STOPPED = 3  # the non-finite loss policy ended training

__all__ = ["UsageError", "compose", "main", "precheck"]


def expand_resume(argv: Sequence[str]) -> list[str]:
    """`resume=DIR [overrides]` -> the saved overrides of DIR, the new ones, hydra.run.dir=DIR.

    The run directory is data: its overrides are replayed without trust flags or hydra.*
    settings, the --config-dir is the one typed now, and a `_target_` outside bigtrain in the
    result needs trust_code=true typed now (targets/trust.py)."""
    from bigtrain.cli.compose import check_trust_typed
    from bigtrain.runs.rundir import (
        RunDirError,
        check_same_config,
        find_resume,
        override_key,
        resume_overrides,
    )
    from bigtrain.targets.trust import check_trusted

    args = parse_args(argv)
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


def precheck(argv: Sequence[str]) -> Checked | None:
    """Compose and validate what `bigtrain argv` would run; raise UsageError or ConfigError.
    Returns what it found for a single run, None for a multirun or an informational flag."""
    from bigtrain.checks import validate
    from bigtrain.cluster.submit import launcher_problem
    from bigtrain.runs.lock import check_free
    from bigtrain.runs.rundir import RunDirError, check_run_files, check_writable

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
    return None if args.multirun else Checked(cfg, run, None if out is None else out[1], choices, added)


def _check_not_taken(out: tuple[str, str], run: Any, multirun: bool, choices: dict) -> None:
    """A new run (or sweep) must not write into a folder that holds an earlier one; resume=, a
    SLURM job's own folder after a requeue, and an Optuna sweep (which resumes its study) may."""
    from bigtrain.cluster.slurm import is_this_jobs_dir
    from bigtrain.runs.lock import is_rank_zero
    from bigtrain.runs.paths import check_new_run, check_new_sweep

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


def _show_config(cfg: DictConfig, run: Any, choices: dict | None, config_dir: str | None) -> None:
    if run.callbacks.print_config and _rank() == 0:
        print_config_tree(cfg, choices, full=run.callbacks.print_config == "full", config_dir=config_dir)


def _dry_run(checked: Checked, config_dir: str | None) -> None:
    """The plan alone: no Lightning, no data, no weights; plan.json in the run directory."""
    from bigtrain.runs.plan import run_plan

    _show_config(checked.cfg, checked.run, checked.choices, config_dir)
    run_plan(checked.run, checked.run_dir, _rank())


@hydra.main(version_base="1.3", config_path=CONFIG_MODULE, config_name=CONFIG_NAME)
def _task(cfg: DictConfig) -> Any:
    from hydra.core.hydra_config import HydraConfig

    from bigtrain.checks import validate
    from bigtrain.config import ConfigError

    try:
        run = validate(cfg)
    except ConfigError as e:
        _fail(str(e))
    # Libraries' warnings (deprecations of their own dependencies) go to bigtrain.log, not the
    # console: conf/hydra/default.yaml gives the py.warnings logger the log file only.
    logging.captureWarnings(True)
    hydra_cfg = HydraConfig.get()
    run_dir = hydra_cfg.runtime.output_dir
    choices = dict(OmegaConf.to_container(hydra_cfg.runtime.choices))
    checked = Checked(cfg, run, run_dir, choices, [])
    config_dir = next(
        (str(p.path) for p in hydra_cfg.runtime.config_sources if p.provider == "command-line"), None
    )
    if run.dry_run:  # a dry run whose run directory only Hydra's runtime could resolve
        _dry_run(checked, config_dir)
        return None
    from bigtrain.callbacks.nan_policy import NonFiniteLossError
    from bigtrain.runs.train import RunFailed, RunInterrupted, train

    _show_config(cfg, run, choices, config_dir)
    try:
        results = train(run, run_dir)
    except ConfigError as e:
        _fail(str(e))
    except NonFiniteLossError as e:  # results.json is written; one line, no traceback
        sys.stderr.write(f"bigtrain: stopped: {e}\n")
        sys.exit(EXIT_TRAINING_STOPPED)
    except (RunInterrupted, RunFailed) as e:  # a signal or the run's storage: one line, where to resume
        if str(e):  # rank zero's (the other ranks' are empty)
            sys.stderr.write(f"bigtrain: {e}\n")
        sys.exit(e.exit_code)
    # Sweepers (Optuna) minimise or maximise what the task returns: the monitored value.
    monitor = run.callbacks.checkpoint.monitor.split("/", 1)
    return results.get(monitor[0], {}).get(monitor[1]) if len(monitor) == 2 else None


def command() -> None:
    """The `bigtrain` executable (and `python -m bigtrain`): main, then a quick exit.

    Once the run is over, the process is about to end: `gc.freeze()` keeps the interpreter's
    shutdown from walking every object that torch and Lightning created for cycles (measured:
    1.1 to 1.3 s at exit, 0.2 s frozen). Objects are still freed by reference counting, files
    were closed by the run, and atexit handlers still run. Only here: `main` called in a
    long-lived process (tests, notebooks) keeps its garbage collector as it was."""
    try:
        main()
    finally:
        gc.freeze()


def main(argv: Sequence[str] | None = None) -> None:
    """`bigtrain ARGS` (the command line's arguments when `argv` is None)."""
    from bigtrain.config import ConfigError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TOOLS:  # bigtrain eval / predict: a finished run's checkpoint
        from bigtrain.cli.tools import main as tool_main

        tool_main(argv)
        return
    if argv[:1] == ["export"]:  # bigtrain export: a checkpoint as one file or a Hugging Face folder
        from bigtrain.runs.export import main as export_main

        export_main(argv[1:], prog="bigtrain export")
        return
    try:
        argv = expand_resume(argv)
        args = parse_args(argv)
        if args.help or args.hydra_help or args.cfg or args.info or args.shell_completion:
            # `bigtrain --help | head` closes the pipe early: end quietly, as other commands do.
            # (Only here: a training process keeps Python's EPIPE errors for its sockets.)
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        if args.help and not (args.hydra_help or args.cfg or args.info or args.shell_completion):
            print_help(list(args.overrides), args.config_dir)
            return
        if (
            args.shell_completion
            and "query=" in " ".join(args.overrides)
            and complete_group_option(args.config_dir)
        ):
            return
        checked = precheck(argv)
    except (UsageError, ConfigError) as e:
        _fail(str(e))
    if checked is not None and checked.added:
        if _rank() == 0:
            print(
                f"bigtrain: a language model: added {' '.join(checked.added)} (set them to choose otherwise)"
            )
        argv = [*argv, *checked.added]
    if checked is not None and checked.run.dry_run and checked.run_dir is not None:
        # The plan needs nothing from Hydra's runtime: it is computed from the config just
        # composed and validated, without composing it twice more (about a second).
        _dry_run(checked, args.config_dir)
        return
    if checked is None or checked.run_dir is None:
        sys.argv = [sys.argv[0], *argv, *_rank_overrides(argv)]
        _task()
        return
    _run_owned(checked, argv, args)


def _run_owned(checked: Checked, argv: list[str], args: Any) -> None:
    """Run Hydra's task holding the run directory's lock from before Hydra writes into it, so a
    refused second command leaves the directory as it was. The folder precheck resolved is pinned
    (a time-stamped default resolved again a second later would be another folder)."""
    from bigtrain.cluster.slurm import is_this_jobs_dir
    from bigtrain.runs.lock import hold, is_rank_zero
    from bigtrain.runs.paths import RunDirError, clear_run, holds_run, quote_value

    if not any(o.startswith(("hydra.run.dir=", "+hydra.run.dir=")) for o in args.overrides):
        argv = [*argv, f"hydra.run.dir={quote_value(checked.run_dir)}"]
    sys.argv = [sys.argv[0], *argv, *_rank_overrides(argv)]
    run_dir, run = Path(checked.run_dir), checked.run
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(hold(run_dir))
        except RunDirError as e:  # a live run took the folder since precheck looked
            _fail(str(e))
        replace = run.overwrite and run.resume is None and is_rank_zero() and not is_this_jobs_dir(run_dir)
        if replace and holds_run(run_dir):
            removed = clear_run(run_dir)
            print(f"bigtrain: overwrite=true: removed the earlier run's {', '.join(removed)} from {run_dir}")
        _task()


def _rank_overrides(argv: Sequence[str]) -> list[str]:
    """Under torchrun or srun every process runs this command. Ranks above zero must not write
    the run directory's .hydra/ copy nor append to rank zero's log: the same overrides Lightning
    gives the processes it launches itself. (All ranks need the same hydra.run.dir.)"""
    rank = os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))
    if rank == "0" or any(a.startswith(("hydra.output_subdir=", "hydra.job.name=")) for a in argv):
        return []
    return ["hydra.output_subdir=null", f"hydra.job.name=bigtrain_rank{rank}"]
