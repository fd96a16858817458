"""Checkpoint files: atomic saves with a digest beside them, and weights-only loads that check it.

- `save_atomic` writes a checkpoint to a temporary file in the same directory, fsyncs it, renames
  it over the target and fsyncs the directory. A rename within one directory is atomic on POSIX
  file systems, so `last.ckpt` is always either the previous complete checkpoint or the new
  complete one, whenever the process dies.
- Every checkpoint file `X.ckpt` has `X.ckpt.sha256` beside it (sha256sum's format): the SHA-256
  of its bytes, computed while they are written. The digest file is replaced just before the
  rename, listing the new digest and the one of the file still in place, and once more after it
  with the new digest alone, so a kill between the two renames leaves a pair that still verifies
  while a byte changed anywhere in the file later does not.
- Loading uses `torch.load(weights_only=True)`: tensors, numbers, strings, lists and dicts
  only. A checkpoint that needs unpickling code (a class, a function) is refused with an
  explanation unless the run sets `trust_checkpoint=true`.

torch is imported inside functions: config validation reads checkpoints through this module
and must stay light (training/checkpoint_io.py is the Lightning plugin on top of it).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import IO, Any

from bigtrain.util import atomic_write, file_mode, fsync_dir

# A temporary file is `.<target name>.<random>.partial`; one left behind marks a save that died.
PARTIAL_SUFFIX = ".partial"
DIGEST_SUFFIX = ".sha256"
# Files whose digest matched, by path: (inode, size, mtime) then. A resume checks the file it picked
# and Lightning loads it right after; the second check needs no second read.
VERIFIED: dict[str, tuple[int, int, int]] = {}


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
