"""The `bigtrain` command: conf/ (plus the user's --config-dir) composed, checked, then run as Hydra's job.

Before Hydra creates a run directory, `precheck` (cli/precheck.py) composes the config (every
job of a multirun grid), validates it (bigtrain.runs.validate) and checks that the output directory can
be written, so that a bad override ends with one line per mistake and exit code 2 in well under
a second, and nothing is written. A single run is then started from that same config, inside
Hydra's job (run directory, log, .hydra/ copies): composed once, validated once. Only after that
are torch and Lightning imported.

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
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

import bigtrain.cluster.slurm  # noqa: F401  (registers the ${bigtrain.*} resolvers that conf/ uses)
from bigtrain.cli.help import complete_group_option, print_config_tree, print_help
from bigtrain.cli.precheck import Checked, expand_resume, precheck
from bigtrain.runs.compose import CONFIG_MODULE, CONFIG_NAME, UsageError, compose, parse_args
from bigtrain.util import global_rank, is_rank_zero

EXIT_CONFIG_ERROR = 2
TOOLS = ("eval", "predict")  # subcommands (cli/tools.py); anything else is Hydra's command line
EXIT_TRAINING_STOPPED = 3  # the non-finite loss policy ended training

__all__ = ["UsageError", "compose", "main", "precheck"]


def _fail(message: str) -> None:
    """Exit 2 with one `bigtrain: error:` line per mistake in `message` (one per line)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise
    for line in message.splitlines() or [message]:
        sys.stderr.write(f"bigtrain: error: {line}\n")
    sys.exit(EXIT_CONFIG_ERROR)


def _show_config(cfg: DictConfig, run: Any, choices: dict | None, config_dir: str | None) -> None:
    from hydra.core.hydra_config import HydraConfig

    if run.callbacks.print_config and is_rank_zero():
        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
        full = run.callbacks.print_config == "full"
        print_config_tree(cfg, choices, full=full, config_dir=config_dir, overrides=overrides)


def _dry_run(checked: Checked, config_dir: str | None) -> None:
    """The plan alone: no Lightning, no data, no weights; plan.json in the run directory."""
    from hydra.core.hydra_config import HydraConfig

    from bigtrain.runs.plan import run_plan

    if checked.composed is not None:  # no Hydra runtime yet: the overrides precheck composed
        with open_dict(checked.composed):
            HydraConfig.instance().set_config(checked.composed)
    _show_config(checked.cfg, checked.run, checked.choices, config_dir)
    run_plan(checked.run, checked.run_dir, global_rank())


@hydra.main(version_base="1.3", config_path=CONFIG_MODULE, config_name=CONFIG_NAME)
def _task(cfg: DictConfig) -> Any:
    """Hydra's task where Hydra composed the config itself (a multirun's job, a run directory
    only Hydra's runtime resolves): validate it, then run it."""
    from bigtrain.config import ConfigError
    from bigtrain.runs.validate import validate

    try:
        run = validate(cfg)
    except ConfigError as e:
        _fail(str(e))
    return _job(cfg, run)


def _job(cfg: DictConfig, run: Any) -> Any:
    """One run of a validated config inside Hydra's job (its run directory, log and .hydra/)."""
    from hydra.core.hydra_config import HydraConfig

    from bigtrain.config import ConfigError

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
        if is_rank_zero():
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
    from bigtrain.runs.lock import hold
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
        _run_job(checked, args.config_dir, _rank_overrides(argv))


def _run_job(checked: Checked, config_dir: str | None, rank_overrides: list[str]) -> None:
    """Hydra's job (run directory, logging, .hydra/ copies, Hydra callbacks) around the config
    precheck composed and validated, as `@hydra.main` would run it but without composing and
    validating it a second time. Hydra's public `run_job` needs the `Callbacks` of its internal
    package (listed in docs/architecture.md)."""
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import configure_log, run_job
    from hydra.types import HydraContext, RunMode

    from bigtrain.runs.compose import make_hydra
    from bigtrain.runs.paths import quote_value

    cfg = checked.composed
    pinned = [f"hydra.run.dir={quote_value(checked.run_dir)}", *rank_overrides]
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.RUN
        cfg.hydra.run.dir = checked.run_dir
        if rank_overrides:  # the other ranks: no .hydra/ copy, their own log file
            cfg.hydra.output_subdir = None
            cfg.hydra.job.name = rank_overrides[1].split("=", 1)[1]
        given = {o.split("=", 1)[0] for o in cfg.hydra.overrides.hydra}
        cfg.hydra.overrides.hydra += [o for o in pinned if o.split("=", 1)[0] not in given]
    configure_log(cfg.hydra.hydra_logging, cfg.hydra.verbose)
    callbacks = Callbacks(cfg)
    context = HydraContext(config_loader=make_hydra(config_dir).config_loader, callbacks=callbacks)
    try:
        callbacks.on_run_start(config=cfg, config_name=cfg.hydra.job.config_name)
        ret = run_job(
            task_function=lambda job_cfg: _job(job_cfg, checked.run),
            config=cfg,
            job_dir_key="hydra.run.dir",
            job_subdir_key=None,
            hydra_context=context,
        )
        callbacks.on_run_end(config=cfg, config_name=cfg.hydra.job.config_name, job_return=ret)
        _ = ret.return_value  # raises what the job raised
    finally:
        GlobalHydra.instance().clear()


def _rank_overrides(argv: Sequence[str]) -> list[str]:
    """Under torchrun or srun every process runs this command. Ranks above zero must not write
    the run directory's .hydra/ copy nor append to rank zero's log: the same overrides Lightning
    gives the processes it launches itself. (All ranks need the same hydra.run.dir.)"""
    rank = global_rank()
    if rank == 0 or any(a.startswith(("hydra.output_subdir=", "hydra.job.name=")) for a in argv):
        return []
    return ["hydra.output_subdir=null", f"hydra.job.name=bigtrain_rank{rank}"]
