"""SLURM: one run identity across preemption, and the resolvers the configs use.

A SLURM job keeps its id when it is requeued, so a run directory named after the job id
(`slurm-<jobid>`, or `slurm-<arrayjob>_<task>` in an array) is the same before and after a
requeue, and the same in every task that srun starts; a timestamp would differ in both cases.
Importing this module registers the resolvers (cli.py imports it before Hydra composes).
"""

from __future__ import annotations

import os
import re
import subprocess
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf

HPC_CKPT = re.compile(r"^hpc_ckpt_(\d+)\.ckpt$")


def job_id(env: dict[str, str] | None = None) -> str | None:
    """'1234' for a job, '1234_5' for task 5 of array 1234, None outside SLURM."""
    env = os.environ if env is None else env
    array, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return env.get("SLURM_JOB_ID") or None


def in_slurm_job() -> bool:
    """True inside a batch or srun job (not an interactive shell where Lightning opts out too)."""
    return job_id() is not None and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def run_id() -> str:
    """`slurm-<job id>` inside a SLURM job, else the local time (the default run folder name)."""
    jid = job_id() if in_slurm_job() else None
    return f"slurm-{jid}" if jid else datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def is_this_jobs_dir(path: str | Path) -> bool:
    """Whether `path` is the folder this SLURM job names after itself (${bigtrain.run_id:}): a
    requeued job comes back to it and goes on there, so it is not another run's folder."""
    return in_slurm_job() and Path(path).name == run_id()


def gpus_per_node(accelerator: str, devices: int) -> int | None:
    """GPUs to request per node: one per device, none when the run is on CPUs."""
    return None if accelerator in ("cpu", "mps") else int(devices)


def sweep_direction(mode: str) -> str:
    """Optuna's direction from callbacks.checkpoint.mode (min -> minimize)."""
    return "maximize" if mode == "max" else "minimize"


def register_resolvers() -> None:
    # use_cache: a multirun resolves the sweep folder once, and Hydra copies the cache to
    # every job (as it does for ${now:...}), so all jobs agree on one folder.
    resolvers = {
        "bigtrain.run_id": (run_id, True),
        "bigtrain.gpus_per_node": (gpus_per_node, False),
        "bigtrain.sweep_direction": (sweep_direction, False),
    }
    for name, (fn, cache) in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=cache)


# --------------------------------------------------------------------------- resume and requeue


def newest_hpc_checkpoint(run_dir: str | Path) -> tuple[Path | None, int]:
    """The highest-numbered hpc_ckpt_N.ckpt in `run_dir` and N (N = times the run was preempted)."""
    best, best_n = None, 0
    for path in Path(run_dir).glob("hpc_ckpt_*.ckpt"):
        m = HPC_CKPT.match(path.name)
        if m and int(m.group(1)) > best_n:
            best, best_n = path, int(m.group(1))
    return best, best_n


def requeue() -> None:
    """Put this job back in the queue; SLURM then stops it and starts it again with the same id."""
    jid = job_id()
    if jid is None:
        raise RuntimeError("requeue needs a SLURM job (SLURM_JOB_ID is not set)")
    subprocess.run(["scontrol", "requeue", jid], check=True, capture_output=True, text=True)


register_resolvers()
