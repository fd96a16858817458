"""Config checks of a run's inputs and outputs: the checkpoint to start from, resume, loggers.

Each check takes the RunConfig and yields one line per problem, naming the fix (bigtrain/checks.py
runs them in order). torch is imported only to inspect a given ckpt_path: it is the only way to
know whether the file loads.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from bigtrain.config import RunConfig

SHARDING_STRATEGIES = ("fsdp", "tp", "fsdp_tp")
LOGGER_PACKAGES = {"mlflow": "mlflow", "wandb": "wandb"}


def _is_sharded(path: str) -> bool:
    # A sharded checkpoint (strategy=fsdp/tp/fsdp_tp) is a directory with a meta.pt inside.
    return os.path.isfile(os.path.join(path, "meta.pt"))


def check_resume(cfg: RunConfig) -> Iterator[str]:
    """resume and ckpt_path both say where to start: only one may."""
    if cfg.resume is not None and cfg.ckpt_path is not None:
        yield (
            f"resume={cfg.resume} and ckpt_path={cfg.ckpt_path} both say where to start: drop ckpt_path "
            "(resume picks the newest intact checkpoint of the run)"
        )


def check_run_paths(cfg: RunConfig) -> Iterator[str]:
    """`name` is one folder name (run directories land in outputs/<name>/), and `resume`, when
    set, is not empty: an empty one would start a new run where a resume was asked for."""
    name = cfg.name
    separator = next((c for c in ("/", "\\", os.sep) if c in name), None)
    if separator is not None or name in (".", ".."):
        why = f"it holds {separator}" if separator else f"{name} is not a folder of its own"
        yield (
            f"name={name} is not a folder name ({why}): runs land in outputs/<name>/, so choose a name "
            "without / and .. (e.g. name=baseline)"
        )
    if cfg.resume is not None and not cfg.resume.strip():
        yield (
            "resume= is empty: give the run directory to continue (resume=outputs/<name>/<time>), "
            "or drop resume= to start a new run"
        )


def check_ckpt_path(cfg: RunConfig) -> Iterator[str]:
    """ckpt_path must exist; a sharded one needs a strategy that loads shards."""
    path = cfg.ckpt_path
    if path is None:
        return
    sharded = _is_sharded(path)
    if not (os.path.isfile(path) or sharded):
        yield f"ckpt_path={path} does not exist: give the path of a .ckpt file, or drop ckpt_path"
    elif sharded and cfg.strategy.name not in SHARDING_STRATEGIES:
        yield (
            f"ckpt_path={path} is a sharded checkpoint, which strategy={cfg.strategy.name} cannot "
            "load: add strategy=fsdp (any number of devices), or export it with python -m bigtrain.runs.export"
        )


def check_checkpoint_contents(cfg: RunConfig) -> Iterator[str]:
    """ckpt_path must be intact and load without running pickled code (unless trusted).
    Needs an existing ckpt_path (check_ckpt_path); imports torch."""
    if cfg.ckpt_path is None:
        return
    from bigtrain.runs.checkpointing import CheckpointError, inspect_checkpoint

    try:
        info = inspect_checkpoint(cfg.ckpt_path, trust=cfg.trust_checkpoint)
    except CheckpointError as e:
        yield f"ckpt_path={cfg.ckpt_path}: {' '.join(str(e).splitlines())}"
        return
    yield from _beyond_limits(cfg, info["epoch"] + 1, info["global_step"])


def _beyond_limits(cfg: RunConfig, epoch: int, step: int) -> Iterator[str]:
    """A checkpoint saved in epoch `epoch` (1-based) at step `step` must be within the run's
    limits, which count the epochs and steps already trained: beyond them, fit would do nothing."""
    t, where = cfg.trainer, f"ckpt_path={cfg.ckpt_path}"
    if t.max_epochs != -1 and epoch > t.max_epochs:
        yield (
            f"{where} was saved in epoch {epoch}, beyond trainer.max_epochs={t.max_epochs}: raise "
            f"trainer.max_epochs above {epoch} to train on from it (it counts the epochs already trained)"
        )
    if t.max_steps != -1 and step > t.max_steps:
        yield (
            f"{where} was saved at step {step}, beyond trainer.max_steps={t.max_steps}: raise "
            f"trainer.max_steps above {step} to train on from it (it counts the steps already trained)"
        )


def check_logger_packages(cfg: RunConfig) -> Iterator[str]:
    """Each logger that is on needs its package (looked up, not imported)."""
    import importlib.util

    for name, package in LOGGER_PACKAGES.items():
        if getattr(cfg.logger, name) is not None and importlib.util.find_spec(package) is None:
            yield (
                f"logger.{name} needs the {package} package: pip install 'bigtrain[{name}]', or drop logger.{name}"
            )
