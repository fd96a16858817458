"""Checkpoints that survive kills, that prove they hold the bytes that were written, and loading
that runs no pickled code.

- `save_atomic` (Lightning's writer, through bigtrain.runs.checkpoint_io) writes every checkpoint
  to a temporary file in the same directory, fsyncs it, renames it over the target and fsyncs the
  directory. A rename within one directory is atomic on POSIX file systems, so `last.ckpt` is
  always either the previous complete checkpoint or the new complete one, whenever the process dies.
- Every checkpoint file `X.ckpt` has `X.ckpt.sha256` beside it (sha256sum's format): the SHA-256
  of its bytes, computed while they are written. The digest file is replaced just before the
  rename, listing the new digest and the one of the file still in place, and once more after it
  with the new digest alone, so a kill between the two renames leaves a pair that still verifies
  while a byte changed anywhere in the file later does not.
- Loading uses `torch.load(weights_only=True)`: tensors, numbers, strings, lists and dicts
  only. A checkpoint that needs unpickling code (a class, a function) is refused with an
  explanation unless the run sets `trust_checkpoint=true`.
- `newest_intact` picks the checkpoint a resumed run starts from: the highest step among the
  files that load, pass their digest, fit the model and hold what a resume needs, naming each one
  that does not.

Sharded checkpoints (a folder of torch.distributed.checkpoint shards plus meta.pt, from
strategy=fsdp/tp) are written by the strategy on every rank, not through this writer: they carry
no digest and are judged by their meta.pt.

torch is imported inside functions: config validation imports this module and must stay light.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from bigtrain.runs.results import file_mode, fsync_dir

# A temporary file is `.<target name>.<random>.partial`; one left behind marks a save that died.
PARTIAL_SUFFIX = ".partial"
DIGEST_SUFFIX = ".sha256"
# What a checkpoint must hold besides weights for a run to continue from it.
RESUME_KEYS = ("optimizer_states", "loops")
# Files whose digest matched, by path: (inode, size, mtime) then. A resume checks the file it picked
# and Lightning loads it right after; the second check needs no second read.
VERIFIED: dict[str, tuple[int, int, int]] = {}
# Wrappers that insert a segment into parameter names (compile, activation checkpointing, FSDP1).
WRAPPER_SEGMENTS = ("_orig_mod.", "_checkpoint_wrapped_module.", "_fsdp_wrapped_module.")


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message says why and what to do."""


class HashingWriter:
    """A write-only file for torch.save that hashes what passes through and keeps an OSError
    (torch turns it into a RuntimeError without the errno)."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.sha = hashlib.sha256()
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            n = self.f.write(data)
        except OSError as e:
            self.error = e
            raise
        self.sha.update(data)
        return n

    def flush(self) -> None:
        self.f.flush()

    def fileno(self) -> int:
        return self.f.fileno()


def digest_path(path: str | Path) -> Path:
    """`X.ckpt` -> `X.ckpt.sha256`."""
    path = Path(path)
    return path.with_name(path.name + DIGEST_SUFFIX)


def read_digests(path: str | Path) -> list[str] | None:
    """The digests listed for checkpoint `path`; None when it has no digest file."""
    try:
        text = digest_path(path).read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return []
    return [line.split()[0] for line in text.splitlines() if line.strip()]


def write_digests(path: Path, digests: list[str]) -> None:
    from bigtrain.runs.results import atomic_write

    text = "".join(f"{d}  {path.name}\n" for d in digests)
    atomic_write(digest_path(path), lambda f: f.write(text.encode()), suffix=PARTIAL_SUFFIX)


def file_sha256(path: str | Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            sha.update(block)
    return sha.hexdigest()


def save_atomic(payload: Any, path: str | Path) -> str:
    """torch.save to a temporary file, fsync, digest file, rename, fsync the folder; the digest."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX)
    except OSError as e:  # a read-only or full file system: name the checkpoint, not the temporary
        raise OSError(e.errno, e.strerror, str(path)) from e
    try:
        os.fchmod(fd, file_mode())  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as f:
            writer = HashingWriter(f)
            try:
                torch.save(payload, writer)
            except RuntimeError:
                if writer.error is None:
                    raise
                raise writer.error from None  # torch's message has no errno
            f.flush()
            os.fsync(f.fileno())
        digest = writer.sha.hexdigest()
        in_place = (read_digests(path) or [])[:1] if path.is_file() else []
        write_digests(path, [digest, *in_place])
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:  # a full disk: say which checkpoint
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    fsync_dir(path.parent)
    if in_place:
        write_digests(path, [digest])
    return digest


def check_digest(path: str | Path) -> bool:
    """True when `path` matches its digest file, False when it has none; CheckpointError otherwise."""
    path = Path(path)
    listed = read_digests(path)
    if listed is None:
        return False
    st = path.stat()
    stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
    if VERIFIED.get(str(path.absolute())) == stamp:
        return True
    if file_sha256(path) not in listed:
        raise CheckpointError(
            f"{path.name} does not match its digest in {digest_path(path).name}: its bytes changed "
            "after it was written (a failing disk, a bad copy)"
        )
    VERIFIED[str(path.absolute())] = stamp
    return True


def load_checkpoint_file(
    path: str | Path, map_location: Any = "cpu", trust: bool = False, mmap: bool = False, verify: bool = False
):
    """torch.load with weights_only unless trusted (after the digest check when `verify`); every
    failure becomes a one-line CheckpointError."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path.name} is empty (a save that never finished)")
    if verify:
        check_digest(path)
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


def inspect_checkpoint(path: str | Path, trust: bool = False, verify: bool = True) -> dict:
    """Load `path` (memory-mapped: only the index is read) and check it is a Lightning checkpoint
    (and, with `verify`, that it matches its digest).

    Returns {'global_step', 'epoch', 'shapes', 'missing', 'verified'}: the state_dict's tensor
    shapes and the resume keys it lacks (None and [] for a sharded folder). Raises
    CheckpointError naming the file. A sharded checkpoint (a folder of distributed-checkpoint
    shards from strategy=fsdp/tp) is judged by its `meta.pt`, which holds the loop state; the
    shards are read by the strategy itself."""
    meta = Path(path) / "meta.pt"
    if meta.is_file():
        ckpt = load_checkpoint_file(meta, map_location="cpu", trust=trust)
        if not isinstance(ckpt, dict):
            raise CheckpointError(f"{Path(path).name}/meta.pt is not a training checkpoint")
        return {**_position(ckpt), "shapes": None, "missing": [], "verified": False}
    ckpt = load_checkpoint_file(path, map_location="cpu", trust=trust, mmap=True)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{Path(path).name} is not a training checkpoint (it has no state_dict)")
    shapes = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items() if hasattr(v, "shape")}
    missing = [key for key in RESUME_KEYS if not ckpt.get(key)]
    return {
        **_position(ckpt),
        "shapes": shapes,
        "missing": missing,
        "verified": verify and check_digest(path),
    }


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


def check_resumable(path: Path, info: dict, expected: dict[str, tuple] | None) -> bool:
    """Everything newest_intact requires beyond loading: the digest, the model's shapes, the resume
    state. Returns whether the digest was checked; raises CheckpointError."""
    if info["missing"]:
        raise CheckpointError(
            f"{path.name} cannot continue a run: it has no {', '.join(info['missing'])} (a weights-only save)"
        )
    if info["shapes"] is not None and expected is not None:
        check_fits(path.name, info["shapes"], expected)
    return path.is_file() and check_digest(path)


def newest_intact(
    ckpt_dir: str | Path,
    trust: bool,
    report: Callable[[str], None],
    clean: bool = True,
    expected: dict[str, tuple] | None = None,
) -> Path | None:
    """The checkpoint a resumed run continues from: the highest global step (ties: the one
    written last) among the files that load, match their digest, fit the `expected` parameter
    shapes and hold optimizer and loop state. Each unusable file and each leftover partial save is
    reported; files older than the one chosen are not read in full."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return None
    if clean:
        remove_leftovers(ckpt_dir, report)
    candidates = []
    for path in ckpt_dir.glob("*.ckpt"):
        try:
            info = inspect_checkpoint(path, trust=trust, verify=False)
        except CheckpointError as e:
            report(f"skipping checkpoint {e}")
            continue
        candidates.append((info["global_step"], path.stat().st_mtime_ns, path, info))
    for _, _, path, info in sorted(candidates, key=lambda c: c[:2], reverse=True):
        try:
            verified = check_resumable(path, info, expected)
        except CheckpointError as e:
            report(f"skipping checkpoint {e}")
            continue
        if not verified and path.is_file():
            report(
                f"{path.name} has no {DIGEST_SUFFIX} digest beside it (an older bigtrain?): using it unverified"
            )
        return path
    return None


def remove_leftovers(ckpt_dir: Path, report: Callable[[str], None]) -> None:
    """Partial saves a kill left behind, and digest files whose checkpoint never got its name."""
    for partial in sorted(ckpt_dir.glob(f".*{PARTIAL_SUFFIX}")):
        report(f"removing {partial.name}: a checkpoint save that was interrupted")
        partial.unlink(missing_ok=True)
    for sidecar in ckpt_dir.glob(f"*.ckpt{DIGEST_SUFFIX}"):
        if not sidecar.with_name(sidecar.name[: -len(DIGEST_SUFFIX)]).exists():
            sidecar.unlink(missing_ok=True)
