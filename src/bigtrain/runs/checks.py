"""Config checks of a run's inputs and outputs: the checkpoint to start from, where checkpoints
go (checkpoint_dir), resume, loggers, the run's name, and the memory the plan needs against this
machine's.

Each check takes the RunConfig and yields one line per problem, naming the fix (runs/validate.py
runs them in order). torch is imported only to inspect a given ckpt_path (the only way to know
whether the file loads) and by the memory check, which plans the model on the meta device.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from bigtrain.config import RunConfig, checkpointing, files_in
from bigtrain.config.errors import first_line

SHARDING_STRATEGIES = ("fsdp", "tp", "fsdp_tp")
# Strategies that save a folder of files per checkpoint through their own writer (distributed
# checkpoint shards, DeepSpeed's engine), not through bigtrain's: local or mounted folders only.
FOLDER_WRITERS = (*SHARDING_STRATEGIES, "deepspeed_zero2", "deepspeed_zero3")
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
    """`name` is one folder name (run directories land in outputs/<name>/) that the file system
    can hold, and `resume`, when set, is not empty: an empty one would start a new run where a
    resume was asked for."""
    name = cfg.name
    separator = next((c for c in ("/", "\\", os.sep) if c in name), None)
    if separator is not None or name in (".", ".."):
        why = f"it holds {separator}" if separator else f"{name} is not a folder of its own"
        yield (
            f"name={name} is not a folder name ({why}): runs land in outputs/<name>/, so choose a name "
            "without / and .. (e.g. name=baseline)"
        )
    size, limit = len(name.encode("utf-8")), name_max()
    if size > limit:
        yield (
            f"name={name[:24]}... is {size} bytes long, over the file system's limit of {limit} for a "
            f"folder name: runs land in outputs/<name>/, so choose a shorter name (e.g. name=baseline)"
        )
    if cfg.resume is not None and not cfg.resume.strip():
        yield (
            "resume= is empty: give the run directory to continue (resume=outputs/<name>/<time>), "
            "or drop resume= to start a new run"
        )


def name_max(folder: str = ".") -> int:
    """The longest file name, in bytes, that the file system of `folder` takes (255 where the
    system cannot say: the limit of ext4, XFS, APFS and NTFS)."""
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # no pathconf (Windows), or no such name
        return 255
    return limit if limit > 0 else 255


def check_ckpt_path(cfg: RunConfig) -> Iterator[str]:
    """ckpt_path must be a file, or a sharded checkpoint's folder (one with meta.pt), which
    needs a strategy that loads shards. (checkpoint_dir's checks run here too: the run's other
    checkpoint path, files and installed packages alike.)"""
    yield from check_checkpoint_dir(cfg)
    path = cfg.ckpt_path
    if path is None:
        return
    sharded = _is_sharded(path)
    if os.path.isdir(path) and not sharded:
        yield (
            f"ckpt_path={path} is a directory, not a file (nor a sharded checkpoint: it has no meta.pt): "
            f"give the path of a .ckpt file{files_in(path, ['.ckpt'])}, or drop ckpt_path"
        )
    elif not (os.path.isfile(path) or sharded):
        yield f"ckpt_path={path} does not exist: give the path of a .ckpt file, or drop ckpt_path"
    elif sharded and cfg.strategy.name not in SHARDING_STRATEGIES:
        yield (
            f"ckpt_path={path} is a sharded checkpoint, which strategy={cfg.strategy.name} cannot "
            "load: add strategy=fsdp (any number of devices), or export it with python -m bigtrain.runs.export"
        )


def check_checkpoint_dir(cfg: RunConfig) -> Iterator[str]:
    """checkpoint_dir, when set, is a folder or a URL of a file system that fsspec knows and whose
    package is installed (looked up and imported, nothing read or written there); a URL takes
    whole-file checkpoints only (not a sharding strategy's folders), and memory:// one process."""
    value = cfg.checkpoint_dir
    if value is None:
        return
    if not value.strip():
        yield (
            "checkpoint_dir= is empty: give a folder or a URL (checkpoint_dir=s3://bucket/run1), or drop "
            "checkpoint_dir= to keep checkpoints in <run dir>/checkpoints"
        )
        return
    from bigtrain.training.checkpoint_files import is_url

    if not is_url(value):
        from bigtrain.runs.rundir import RunDirError, check_writable

        if os.path.isfile(value):
            yield f"checkpoint_dir={value} is a file, not a folder: give a folder (made when missing) or a URL"
            return
        try:
            check_writable(value, what="checkpoint_dir")
        except RunDirError as e:
            yield str(e)
        return
    problem = fsspec_problem(value)
    if problem is not None:
        yield f"checkpoint_dir={value}: {problem}"
        return
    name = cfg.strategy.name
    if name in FOLDER_WRITERS:
        yield (
            f"checkpoint_dir={value}: strategy={name} saves each checkpoint as a folder of shards through its "
            "own writer, which bigtrain sends to a local or mounted folder only: give a folder "
            "(a shared file system for several nodes), or drop checkpoint_dir"
        )
    processes = cfg.trainer.devices * cfg.trainer.num_nodes
    if value.startswith("memory://") and processes > 1:
        yield (
            f"checkpoint_dir={value}: memory:// lives inside one process, and this run has {processes} "
            "(trainer.devices x trainer.num_nodes): give a shared folder or an object store's URL"
        )


def fsspec_problem(url: str) -> str | None:
    """What keeps fsspec from opening `url` (each protocol of a chained URL): an unknown
    protocol, or a package to install; None when it can."""
    import fsspec
    from fsspec.utils import get_protocol

    for part in url.split("::"):
        protocol = get_protocol(part)
        try:
            fsspec.get_filesystem_class(protocol)
        except ValueError:
            known = ", ".join(f"{p}://" for p in ("s3", "gs", "az", "hdfs", "sftp", "memory"))
            return (
                f"fsspec knows no {protocol}:// protocol: give a local folder or a URL of one it knows "
                f"({known}, ...)"
            )
        except ImportError as e:
            missing = getattr(e.__cause__, "name", None) or _package_in(str(e)) or protocol
            return f"{protocol}:// needs the {missing} package, which is not installed: pip install {missing}"
    return None


def _package_in(message: str) -> str | None:
    """The package fsspec's message names ('Install s3fs to access S3' -> 's3fs')."""
    import re

    found = re.search(r"install ['\"]?([\w.-]+)", message, re.IGNORECASE) or re.search(
        r"['\"]([\w.-]+)['\"] to be installed", message
    )
    return found.group(1) if found else None


def checkpoint_dir_taken(cfg: RunConfig) -> str | None:
    """For a new run: a checkpoint_dir that already holds checkpoints (an earlier run's: a resume
    of this one would pick whichever has the highest step) is one line naming the way on; None
    otherwise. Not in CHECKS, since eval validates the config of a finished run with the same
    value: the run checks it before it writes (runs/train.py). A resume, a dry run and a SLURM
    job (a requeue goes on from its own checkpoints) may use a folder with checkpoints."""
    if cfg.checkpoint_dir is None or cfg.resume is not None or cfg.dry_run:
        return None
    from bigtrain.cluster.slurm import in_slurm_job
    from bigtrain.training.checkpoint_files import base_name, list_checkpoints

    if in_slurm_job():
        return None
    try:
        found = list_checkpoints(cfg.checkpoint_dir)
    except Exception as e:  # the file system's own errors: credentials, a missing bucket, the network
        reason = first_line(e)
        return f"checkpoint_dir={cfg.checkpoint_dir} cannot be listed ({reason}): check the URL and your access to it"
    if not found:
        return None
    names = ", ".join(base_name(p) for p in found[:3]) + (", ..." if len(found) > 3 else "")
    return (
        f"checkpoint_dir={cfg.checkpoint_dir} already holds checkpoints ({names}) of an earlier run, which "
        "a resume of this one could pick: choose another checkpoint_dir, or continue that run with resume="
    )


def check_checkpoint_contents(cfg: RunConfig) -> Iterator[str]:
    """ckpt_path must be intact and load without running pickled code (unless trusted).
    Needs an existing ckpt_path (check_ckpt_path); imports torch."""
    if cfg.ckpt_path is None:
        return
    from bigtrain.runs.checkpointing import inspect_checkpoint
    from bigtrain.training.checkpoint_files import CheckpointError

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


# Strategy keys that move weights, gradients or optimizer state to host memory: the plan's
# per-device total then overstates what the device holds, so the memory check stands aside.
OFFLOAD_KEYS = ("cpu_offload", "offload_optimizer", "offload_parameters")
# The plan's parts of memory_per_device_bytes that add up to its total.
MEMORY_PARTS = ("weights", "gradients", "optimizer", "activations", "transient", "fsdp_buffers")


def check_memory(cfg: RunConfig) -> Iterator[str]:
    """The plan's memory per device (runs/plan.py: weights, gradients, optimizer state,
    activations, on the meta device, so nothing is allocated) must fit this machine: one GPU's
    memory, or for CPU processes the machine's RAM, which the processes of one node share.
    Beyond it the run could only fail, minutes later, or swap.

    Not for a dry run (it plans for any machine), nor with check_memory=false, nor with a
    strategy that offloads to host memory, nor for a model or data module of your own (planning
    them may build them for real). Imports torch; needs every earlier check to have passed."""
    from bigtrain.data import source
    from bigtrain.models.family import family

    own_code = family(cfg.model.family).own_code or source(cfg.data.name).batches_itself
    if cfg.dry_run or not cfg.check_memory or own_code:
        return
    if any(getattr(cfg.strategy, key, False) for key in OFFLOAD_KEYS):
        return
    machine = machine_memory(cfg)
    if machine is None:
        return
    from bigtrain.data import data_spec
    from bigtrain.runs.plan import make_plan

    plan = make_plan(cfg, data_spec(cfg))
    line = memory_problem(cfg, plan, machine)
    if line is not None:
        yield line


@dataclass(frozen=True)
class Machine:
    """What would hold a run: `memory` bytes, shared by `processes` processes; `gpu` is the
    GPU's name, None for the machine's RAM."""

    memory: int
    processes: int
    gpu: str | None = None

    def __str__(self) -> str:
        size = _gib(self.memory)
        return f"the GPU's {size} ({self.gpu})" if self.gpu else f"this machine's {size} of RAM"


def machine_memory(cfg: RunConfig) -> Machine | None:
    """The memory of the device the run asks for: the smallest visible GPU's total when CUDA is
    asked for (or `auto` finds it), else the machine's physical RAM, which its
    `trainer.devices` CPU processes share (MPS uses the RAM too). Total, not available, memory:
    what is free changes by the second with other programs, so only a plan that can never fit
    is refused. None where the size cannot be read (and where check_hardware finds no GPU)."""
    t = cfg.trainer
    if t.accelerator in ("gpu", "cuda", "auto"):
        import torch

        if torch.cuda.is_available():
            count = max(1, min(t.devices, torch.cuda.device_count()))
            gpus = [torch.cuda.get_device_properties(i) for i in range(count)]
            smallest = min(gpus, key=lambda p: p.total_memory)
            return Machine(smallest.total_memory, 1, smallest.name)
        if t.accelerator != "auto":
            return None
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):  # no sysconf (Windows), or no such name
        return None
    return Machine(ram, 1 if t.accelerator == "mps" else t.devices)


def memory_problem(cfg: RunConfig, plan: dict, machine: Machine) -> str | None:
    """The error line when the plan's memory per device, times the processes that share the
    machine's memory, exceeds it: what the plan needs (and its parts), what there is, and the
    fixes (activation checkpointing first where it alone would fit)."""
    mem, n = plan["memory_per_device_bytes"], machine.processes
    if mem["total"] * n <= machine.memory:
        return None
    per = "per device" if n == 1 else "per process"
    need = f"{_gib(mem['total'])} {per}" + (f", {_gib(mem['total'] * n)} for {n} processes" if n > 1 else "")
    parts = ", ".join(f"{k} {_gib(mem[k])}" for k in MEMORY_PARTS if k in mem)
    more = (
        "GPUs (strategy=fsdp trainer.devices=N)"
        if machine.gpu
        else "machines (strategy=fsdp trainer.num_nodes=N)"
    )
    fixes = ["a smaller model or data.batch_size", f"sharding over more {more}"]
    ckpt = mem.get("total_checkpointed")
    if ckpt is not None and checkpointing(cfg.strategy).mode != "full" and ckpt * n <= machine.memory:
        fixes.insert(0, f"strategy.activation_checkpointing=true ({_gib(ckpt)} {per})")
    return (
        f"the plan needs {need} ({_count(plan['params']['total'])} parameters: {parts}), more than "
        f"{machine}: use {', '.join(fixes)}, or set check_memory=false to run anyway (dry_run=true "
        "shows the plan)"
    )


def _gib(n: float) -> str:
    """Bytes in GiB (MiB below one GiB), as the error line shows them."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _count(n: int) -> str:
    """A parameter count in words: 7.5B, 125.0M, 50.8K."""
    for size, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= size:
            return f"{n / size:.1f}{suffix}"
    return str(n)
