"""Submitting a multirun to SLURM (`hydra/launcher=slurm`): one line where it cannot be submitted,
and a dry run that submits nothing.

The launcher itself is Hydra's submitit launcher, subclassed in hydra_plugins/bigtrain_launcher
(Hydra takes launchers only from the hydra_plugins package); what it does differently lives
here. Before Hydra makes the sweep folder, `launcher_problem` refuses a SLURM multirun on a
machine without `sbatch`. At submission, `submit` turns sbatch's refusal (an unknown partition,
a GPU request on a cluster without GPUs, a time limit above the partition's) into one line and
exit code 2. A multirun whose every job is `dry_run=true` is planned on this machine, one job
after the other as Hydra's basic launcher runs them: a plan needs no cluster.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from typing import Any

from bigtrain.config.errors import first_line

SLURM_LAUNCHER = "hydra_plugins.bigtrain_launcher.SlurmLauncher"
EXIT_NOT_SUBMITTED = 2


def is_slurm(target: str | None) -> bool:
    """Whether a launcher's `_target_` is a submitit SLURM launcher (bigtrain's or Hydra's own)."""
    return bool(target) and str(target).rsplit(".", 1)[-1] == "SlurmLauncher"


def launcher_problem(target: str | None, dry_run: bool) -> str | None:
    """The error line for a SLURM multirun that this machine cannot submit, or None."""
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if not is_slurm(target) or dry_run or not missing:
        return None
    return (
        f"hydra/launcher=slurm submits the jobs with SLURM's sbatch and srun, and {' and '.join(missing)} "
        "is not on this machine's PATH: run the command on a SLURM login node, or use "
        "hydra/launcher=local to run the jobs here"
    )


def register_launcher(config: Any) -> None:
    """Make bigtrain's SLURM launcher known to Hydra before it is built. (An editable install hides
    hydra_plugins/bigtrain_launcher from Hydra's plugin scan; an installed wheel does not.)"""
    from omegaconf import OmegaConf

    if OmegaConf.select(config, "hydra.launcher._target_", default=None) != SLURM_LAUNCHER:
        return
    from hydra.core.plugins import Plugins

    from hydra_plugins.bigtrain_launcher import SlurmLauncher

    Plugins.instance().register(SlurmLauncher)


def not_submitted(e: BaseException) -> str | None:
    """The error line for an exception of the submission (sbatch missing or refusing the jobs),
    or None for anything else (a job that failed after it was submitted)."""
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    first = first_line(e)
    if (isinstance(e, FileNotFoundError) and "sbatch" in str(e)) or (
        isinstance(e, RuntimeError) and 'detect "srun"' in str(e)
    ):
        return launcher_problem(SLURM_LAUNCHER, dry_run=False) or f"SLURM's tools cannot be started ({first})"
    if isinstance(e, FailedSubmissionError) or (isinstance(e, FailedJobError) and "sbatch" in str(e)):
        return (
            f"SLURM refused the jobs ({first}): set hydra.launcher.partition, timeout_min, nodes or "
            "gpus_per_node to what the cluster offers (sinfo lists its partitions), or use "
            "hydra/launcher=local to run them here"
        )
    return None


class HoldSbatch(io.TextIOBase):
    """sys.stderr while submitting, holding back what sbatch said: submitit prints sbatch's refusal
    before raising it, and the command shows it once, in its own line (see submit)."""

    def __init__(self, stream: Any) -> None:
        super().__init__()
        self.stream, self.held = stream, []

    def write(self, text: str) -> int:
        if text.startswith("sbatch:") or (self.held and self.held[-1] != "\n" and text == "\n"):
            self.held.append(text)
        else:
            self.stream.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def submit(launch: Callable[[], Sequence[Any]]) -> Sequence[Any]:
    """`launch()` (the submitit launcher's submission and wait), ending the command with one line
    and exit code 2 where SLURM cannot take the jobs (HYDRA_FULL_ERROR=1 shows the traceback)."""
    held = HoldSbatch(sys.stderr)
    try:
        with contextlib.redirect_stderr(held):
            return launch()
    except Exception as e:
        line = None if os.environ.get("HYDRA_FULL_ERROR") == "1" else not_submitted(e)
        if line is None:
            sys.stderr.write("".join(held.held))
            raise
        sys.stderr.write(f"bigtrain: error: {line}\n")
        sys.exit(EXIT_NOT_SUBMITTED)
    finally:
        held.held.clear()


def all_dry_runs(launcher: Any, job_overrides: Sequence[Sequence[str]]) -> bool:
    """Whether every job of the sweep is a dry run (each job's config as Hydra composes it)."""
    loader = launcher.hydra_context.config_loader
    return all(
        loader.load_sweep_config(launcher.config, list(overrides)).get("dry_run") is True
        for overrides in job_overrides
    )


def plan_here(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
    """Run each (dry-run) job in this process, in order, as Hydra's basic launcher does: each one
    writes its plan into its job folder, and nothing reaches SLURM."""
    from pathlib import Path

    from hydra.core.utils import configure_log, run_job, setup_globals
    from omegaconf import open_dict

    setup_globals()
    config, context = launcher.config, launcher.hydra_context
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    print(
        f"bigtrain: dry_run=true: planning the {len(job_overrides)} jobs here; nothing is submitted to SLURM"
    )
    runs = []
    for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
        job = context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(job):
            job.hydra.job.id = job.hydra.job.num = idx
        runs.append(
            run_job(
                hydra_context=context,
                task_function=launcher.task_function,
                config=job,
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
            )
        )
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    return runs
