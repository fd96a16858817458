"""Checkpoints that survive kills, and loading that runs no pickled code.

- `save_atomic` (Lightning's writer, through bigtrain.runs.checkpoint_io) writes every checkpoint to a temporary file in the same directory,
  fsyncs it, renames it over the target and fsyncs the directory. A rename within one
  directory is atomic on POSIX file systems, so `last.ckpt` is always either the previous
  complete checkpoint or the new complete one, whenever the process dies.
- Loading uses `torch.load(weights_only=True)`: tensors, numbers, strings, lists and dicts
  only. A checkpoint that needs unpickling code (a class, a function) is refused with an
  explanation unless the run sets `trust_checkpoint=true`.
- `newest_intact` picks the checkpoint a resumed run starts from: the highest step among the
  files that load, naming each one that does not.

torch is imported inside functions: config validation imports this module and must stay light.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

# A temporary file is `.<target name>.<random>.partial`; one left behind marks a save that died.
PARTIAL_SUFFIX = ".partial"


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message says why and what to do."""


def save_atomic(payload: Any, path: str | Path) -> None:
    """torch.save through results.atomic_write: a temporary file, fsync, rename, fsync the folder."""
    import torch

    from bigtrain.runs.results import atomic_write

    atomic_write(path, lambda f: torch.save(payload, f), suffix=PARTIAL_SUFFIX)


def load_checkpoint_file(
    path: str | Path, map_location: Any = "cpu", trust: bool = False, mmap: bool = False
):
    """torch.load with weights_only unless trusted; every failure becomes a one-line CheckpointError."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path.name} is empty (a save that never finished)")
    try:
        return torch.load(path, map_location=map_location, weights_only=not trust, mmap=mmap)
    except pickle.UnpicklingError as e:
        if trust:
            raise CheckpointError(f"{path.name} is corrupt: {_first_line(e)}") from e
        raise CheckpointError(
            f"{path.name} needs unpickling code to load ({_unsafe_global(e)}), which can run anything: "
            "if you trust where it came from, add trust_checkpoint=true"
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path.name} is corrupt or truncated ({_first_line(e)})") from e


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _unsafe_global(e: BaseException) -> str:
    """The class or function torch refused, e.g. 'argparse.Namespace'."""
    import re

    found = re.search(r"GLOBAL ([\w.]+)", str(e))
    return found.group(1) if found else "a class or function"


def inspect_checkpoint(path: str | Path, trust: bool = False) -> dict:
    """Load `path` (memory-mapped: only the index is read) and check it is a Lightning checkpoint.

    Returns {'global_step', 'epoch'}; raises CheckpointError naming the file. A sharded
    checkpoint (a folder of distributed-checkpoint shards from strategy=fsdp/tp) is judged by its
    `meta.pt`, which holds the loop state; the shards are read by the strategy itself."""
    meta = Path(path) / "meta.pt"
    if meta.is_file():
        ckpt = load_checkpoint_file(meta, map_location="cpu", trust=trust)
        if not isinstance(ckpt, dict):
            raise CheckpointError(f"{Path(path).name}/meta.pt is not a training checkpoint")
        return {"global_step": int(ckpt.get("global_step", 0)), "epoch": int(ckpt.get("epoch", 0))}
    ckpt = load_checkpoint_file(path, map_location="cpu", trust=trust, mmap=True)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{Path(path).name} is not a training checkpoint (it has no state_dict)")
    return {"global_step": int(ckpt.get("global_step", 0)), "epoch": int(ckpt.get("epoch", 0))}


def newest_intact(
    ckpt_dir: str | Path, trust: bool, report: Callable[[str], None], clean: bool = True
) -> Path | None:
    """The checkpoint a resumed run continues from: highest global step among the files that load
    (ties: the one written last). Each unusable file and each leftover partial save is reported."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return None
    for partial in sorted(ckpt_dir.glob(f".*{PARTIAL_SUFFIX}")) if clean else ():
        report(f"removing {partial.name}: a checkpoint save that was interrupted")
        partial.unlink(missing_ok=True)
    candidates = []
    for path in ckpt_dir.glob("*.ckpt"):
        try:
            info = inspect_checkpoint(path, trust=trust)
        except CheckpointError as e:
            report(f"skipping checkpoint {e}")
            continue
        candidates.append((info["global_step"], path.stat().st_mtime_ns, path))
    return max(candidates)[2] if candidates else None
