"""Which checkpoint a run continues from: inspecting one (step, shapes, what a resume needs),
checking it fits the model, picking the newest intact one, and clearing a dead save's leftovers.

- `newest_intact` picks the checkpoint a resumed run starts from: the highest step among the
  files that load, pass their digest (training/checkpoint_files.py), fit the model and hold what
  a resume needs, naming each one that does not.

The checkpoint folder is `<run dir>/checkpoints`, or `checkpoint_dir` (a local folder or an
fsspec URL: `checkpoint_folder`); every function here takes either. A remote checkpoint is read
whole, so its digest is checked on the same read that inspects it.

Sharded checkpoints (a folder of torch.distributed.checkpoint shards plus meta.pt, from
strategy=fsdp/tp) are written by the strategy on every rank, not through bigtrain's writer: they
carry no digest and are judged by their meta.pt. They are local only (runs/checks.py refuses a
URL checkpoint_dir with a sharding strategy).

torch is imported inside functions: config validation imports this module and must stay light.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from bigtrain.training.checkpoint_files import (
    DIGEST_SUFFIX,
    PARTIAL_SUFFIX,
    CheckpointError,
    Location,
    base_name,
    check_digest,
    exists,
    list_checkpoints,
    load_checkpoint_file,
    location,
    modified_ns,
    read_digests,
    remove_file,
)


def has_checkpoints(folder: str | os.PathLike) -> bool:
    """The folder (local or remote) holds at least one .ckpt file."""
    return bool(list_checkpoints(folder))


# What a checkpoint must hold besides weights for a run to continue from it.
RESUME_KEYS = ("optimizer_states", "loops")
# Wrappers that insert a segment into parameter names (compile, activation checkpointing, FSDP1).
WRAPPER_SEGMENTS = ("_orig_mod.", "_checkpoint_wrapped_module.", "_fsdp_wrapped_module.")


def inspect_checkpoint(path: str | os.PathLike, trust: bool = False, verify: bool = True) -> dict:
    """Load `path` (memory-mapped: only the index is read) and check it is a Lightning checkpoint
    (and, with `verify`, that it matches its digest).

    Returns {'global_step', 'epoch', 'shapes', 'missing', 'verified'}: the state_dict's tensor
    shapes and the resume keys it lacks (None and [] for a sharded folder). Raises
    CheckpointError naming the file. A sharded checkpoint (a folder of distributed-checkpoint
    shards from strategy=fsdp/tp) is judged by its `meta.pt`, which holds the loop state; the
    shards are read by the strategy itself. A remote file is read once, whole, and its digest
    checked on those bytes whatever `verify` says (a second read would cost more than the hash)."""
    path = location(path)
    meta = path / "meta.pt" if isinstance(path, Path) else None
    if meta is not None and meta.is_file():
        ckpt = load_checkpoint_file(meta, map_location="cpu", trust=trust)
        if not isinstance(ckpt, dict):
            raise CheckpointError(f"{path.name}/meta.pt is not a training checkpoint")
        return {**_position(ckpt), "shapes": None, "missing": [], "verified": False}
    remote = isinstance(path, str)
    ckpt = load_checkpoint_file(path, map_location="cpu", trust=trust, mmap=True, verify=remote)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{base_name(path)} is not a training checkpoint (it has no state_dict)")
    shapes = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items() if hasattr(v, "shape")}
    missing = [key for key in RESUME_KEYS if not ckpt.get(key)]
    # Remotely the load above checked the digest, when there is one.
    verified = read_digests(path) is not None if remote else verify and check_digest(path)
    return {**_position(ckpt), "shapes": shapes, "missing": missing, "verified": verified}


def _position(ckpt: dict) -> dict:
    return {"global_step": int(ckpt.get("global_step", 0)), "epoch": int(ckpt.get("epoch", 0))}


def plain_key(key: str) -> str:
    """A parameter name without the segments wrappers insert ('_orig_mod.' and the like)."""
    for segment in WRAPPER_SEGMENTS:
        key = key.replace(segment, "")
    return key


def check_fits(name: str, shapes: dict[str, tuple], expected: dict[str, tuple]) -> None:
    """CheckpointError unless the checkpoint's weights have the model's names and shapes."""
    have = {plain_key(k): s for k, s in shapes.items()}
    want = {plain_key(k): tuple(s) for k, s in expected.items()}
    missing = sorted(set(want) - set(have))
    if missing:
        raise CheckpointError(
            f"{name} lacks weights of the model ({', '.join(missing[:3])}): a checkpoint of another model"
        )
    wrong = [k for k in want if have[k] != want[k]]
    if wrong:
        k = wrong[0]
        raise CheckpointError(
            f"{name} does not fit the model: {k} is {have[k]} in the file and {want[k]} in the model "
            "(a checkpoint of another model config)"
        )


def check_resumable(path: Location, info: dict, expected: dict[str, tuple] | None) -> bool:
    """Everything newest_intact requires beyond loading: the digest, the model's shapes, the resume
    state. Returns whether the digest was checked; raises CheckpointError."""
    name = base_name(path)
    if info["missing"]:
        raise CheckpointError(
            f"{name} cannot continue a run: it has no {', '.join(info['missing'])} (a weights-only save)"
        )
    if info["shapes"] is not None and expected is not None:
        check_fits(name, info["shapes"], expected)
    if isinstance(path, str):
        return info["verified"]  # checked when it was read (inspect_checkpoint)
    return path.is_file() and check_digest(path)


def newest_intact(
    ckpt_dir: str | os.PathLike,
    trust: bool,
    report: Callable[[str], None],
    clean: bool = True,
    expected: dict[str, tuple] | None = None,
) -> Location | None:
    """The checkpoint a resumed run continues from: the highest global step (ties: the one
    written last) among the files that load, match their digest, fit the `expected` parameter
    shapes and hold optimizer and loop state. Each unusable file and each leftover partial save is
    reported; local files older than the one chosen are not read in full (remote ones are read
    once each). `ckpt_dir` is a local folder or a URL; so is what it returns."""
    ckpt_dir = location(ckpt_dir)
    if isinstance(ckpt_dir, Path) and not ckpt_dir.is_dir():
        return None
    if clean:
        remove_leftovers(ckpt_dir, report)
    candidates = []
    for path in list_checkpoints(ckpt_dir):
        try:
            info = inspect_checkpoint(path, trust=trust, verify=False)
        except CheckpointError as e:
            report(f"skipping checkpoint {e}")
            continue
        candidates.append((info["global_step"], modified_ns(path), path, info))
    for _, _, path, info in sorted(candidates, key=lambda c: c[:2], reverse=True):
        try:
            verified = check_resumable(path, info, expected)
        except CheckpointError as e:
            report(f"skipping checkpoint {e}")
            continue
        if not verified and (isinstance(path, str) or path.is_file()):
            why = (
                "a save stopped before writing it, or an older bigtrain?"
                if isinstance(path, str)
                else "an older bigtrain?"
            )
            report(f"{base_name(path)} has no {DIGEST_SUFFIX} digest beside it ({why}): using it unverified")
        return path
    return None


def remove_leftovers(ckpt_dir: str | os.PathLike, report: Callable[[str], None]) -> None:
    """Partial saves a kill left behind, and digest files whose checkpoint never got its name
    (a remote save leaves no partial file: the object store commits whole objects)."""
    ckpt_dir = location(ckpt_dir)
    if isinstance(ckpt_dir, Path):
        for partial in sorted(ckpt_dir.glob(f".*{PARTIAL_SUFFIX}")):
            report(f"removing {partial.name}: a checkpoint save that was interrupted")
            partial.unlink(missing_ok=True)
    for sidecar in list_checkpoints(ckpt_dir, f"*.ckpt{DIGEST_SUFFIX}"):
        if not exists(str(sidecar)[: -len(DIGEST_SUFFIX)]):
            remove_file(sidecar)
