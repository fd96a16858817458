"""Shared fixtures: configs composed with the same code path as the `bigtrain` command, and
runs that write into pytest's tmp_path instead of outputs/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

import bigtrain
from bigtrain.config import RunConfig
from bigtrain.runs.compose import compose_run
from bigtrain.runs.validate import validate

# No progress bar, config tree or model summary: keeps test output readable and steps fast.
QUIET = [
    "trainer.enable_progress_bar=false",
    "callbacks.print_config=false",
    "callbacks.model_summary_depth=0",
]
# One short epoch of each stage.
FAST = [*QUIET, "+debug=fast"]
# For tests that read the config of a preset sized for GPUs (a 175B plan, an 8-GPU recipe): the
# plan's memory is not held against this machine's. Only those tests add it; everything that
# trains keeps the check (tests/test_prerun_refusals.py tests it).
READ_ONLY = ["check_memory=false"]

EXPERIMENTS = sorted(
    p.name[: -len(".yaml")]
    for p in resources.files("bigtrain.conf").joinpath("experiment").iterdir()
    if p.name.endswith(".yaml")
)
# Language-model experiments: their metrics differ and the GPU recipes need shrinking on CPU
# (tests/test_lm.py runs them).
LM_EXPERIMENTS = ["gpt_125m", "gpt_stdlib", "llama_7b"]
# Speech experiments: they read a folder of your clips (tests/test_speech.py runs them on the
# synthesized spoken digits).
SPEECH_EXPERIMENTS = ["speech_commands_kws", "spoken_digits", "spoken_digits_ctc"]


# What one launch of torch.distributed leaves in os.environ (Lightning sets MASTER_PORT in the
# process it runs in); inherited by a later test's subprocesses, it makes them all rendezvous on
# one port that may still be held.
DIST_ENV = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "NODE_RANK",
    "GROUP_RANK",
    "LOCAL_WORLD_SIZE",
    "PL_GLOBAL_SEED",
    "PL_SEED_WORKERS",
)


@pytest.fixture(autouse=True)
def _isolated_distributed_env():
    """Each test starts without the distributed variables and process group of the one before."""
    before = {k: os.environ.get(k) for k in DIST_ENV}
    yield
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def make_cfg(overrides: list[str] = (), config_dir: str | None = None) -> RunConfig:
    """A validated RunConfig for `bigtrain OVERRIDES`."""
    return validate(compose_run(list(overrides), config_dir)[0])


@pytest.fixture
def cfg() -> RunConfig:
    """The default run, shortened to one short epoch."""
    return make_cfg(FAST)


@pytest.fixture
def run(tmp_path):
    """Train in this process: run(overrides) -> (results dict, run_dir)."""
    counter = {"n": 0}

    def _run(overrides: list[str], quiet: bool = True) -> tuple[dict, Path]:
        counter["n"] += 1
        run_dir = tmp_path / f"run{counter['n']}"
        results = bigtrain.train([*(QUIET if quiet else []), *overrides], run_dir=run_dir)
        return results, run_dir

    return _run


def bigtrain_cmd(
    *args: str, cwd: Path, env: dict | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """Run the real command line in a subprocess."""
    full_env = {
        k: v
        for k, v in os.environ.items()
        if k != "HYDRA_FULL_ERROR" and k not in DIST_ENV and not k.startswith(("SLURM_", "TORCHELASTIC_"))
    }
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bigtrain", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_results(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "results.json").read_text())
