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
- A checkpoint folder may be an fsspec URL (`checkpoint_dir=s3://bucket/run1`, `memory://...`).
  There is no rename on an object store, but a put is atomic per object: the checkpoint's bytes
  go straight to the final name (hashed on the way, inside one fsspec transaction, so a failed
  write is discarded rather than committed), then the digest file beside it. Until the digest is
  written the new bytes do not match the old digest, so a reader that verifies never accepts a
  half-written checkpoint; a kill between the two puts leaves a checkpoint that a resume skips,
  naming it. A remote checkpoint is read once, whole: its digest is checked on the bytes loaded.

torch and fsspec are imported inside functions: config validation reads checkpoints through
this module and must stay light (training/checkpoint_io.py is the Lightning plugin on top of it).
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import IO, Any

from bigtrain.config.errors import first_line
from bigtrain.util import atomic_write, file_mode, fsync_dir

# A temporary file is `.<target name>.<random>.partial`; one left behind marks a save that died.
PARTIAL_SUFFIX = ".partial"
DIGEST_SUFFIX = ".sha256"
# The checkpoint folder inside a run directory when checkpoint_dir is not set.
CHECKPOINTS = "checkpoints"
# Files whose digest matched, by path: (inode, size, mtime) then. A resume checks the file it picked
# and Lightning loads it right after; the second check needs no second read.
VERIFIED: dict[str, tuple[int, int, int]] = {}
# A checkpoint or folder: a local Path, or the URL (str) of a file system fsspec reaches.
Location = Path | str


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


def checkpoint_folder(checkpoint_dir: str | None, run_dir: str | os.PathLike) -> Location:
    """Where a run keeps its checkpoints: `checkpoint_dir` (a local folder, made absolute from
    the working directory, or an fsspec URL), else `<run_dir>/checkpoints`."""
    if checkpoint_dir is None:
        return Path(run_dir) / CHECKPOINTS
    folder = location(checkpoint_dir)
    return folder.absolute() if isinstance(folder, Path) else folder


def shown(path: str | os.PathLike, run_dir: str | os.PathLike) -> str:
    """A checkpoint or folder as a line names it: relative to the run directory inside it
    (`checkpoints/last.ckpt`), else in full (a URL, an absolute path)."""
    path = location(path)
    if isinstance(path, str):
        return path
    rel = os.path.relpath(path.absolute(), Path(run_dir).absolute())
    return str(path) if rel.startswith("..") else rel


def is_url(path: str | os.PathLike) -> bool:
    """A URL of a file system other than the local one (`s3://...`, `memory://...`)."""
    from fsspec.utils import get_protocol

    text = os.fspath(path)
    return "://" in text and get_protocol(text) not in ("file", "local")


def location(path: str | os.PathLike) -> Location:
    """A checkpoint or folder as the functions here take it: a URL stays a string (without a
    trailing /), a local path (`file://` stripped) becomes a Path."""
    text = os.fspath(path)
    if is_url(text):
        return text.rstrip("/")
    if "://" in text:
        from fsspec.core import url_to_fs

        return Path(url_to_fs(text)[1])
    return Path(text)


def child(folder: str | os.PathLike, name: str) -> Location:
    """`name` inside `folder`, a local folder or a URL."""
    folder = location(folder)
    return f"{folder}/{name}" if isinstance(folder, str) else folder / name


def base_name(path: str | os.PathLike) -> str:
    """The file name of a checkpoint, local or remote."""
    path = location(path)
    return path.rsplit("/", 1)[-1] if isinstance(path, str) else path.name


def remote(url: str) -> tuple[Any, str]:
    """(the fsspec file system of `url`, the path on it)."""
    from fsspec.core import url_to_fs

    return url_to_fs(url)


def exists(path: str | os.PathLike) -> bool:
    path = location(path)
    if isinstance(path, Path):
        return path.exists()
    fs, target = remote(path)
    return fs.exists(target)


def list_checkpoints(folder: str | os.PathLike, pattern: str = "*.ckpt") -> list[Location]:
    """The files of `folder` (local or remote) that match `pattern`; [] when it does not exist."""
    folder = location(folder)
    if isinstance(folder, Path):
        return sorted(folder.glob(pattern)) if folder.is_dir() else []
    fs, root = remote(folder)
    return [child(folder, p.rstrip("/").rsplit("/", 1)[-1]) for p in sorted(fs.glob(f"{root}/{pattern}"))]


def modified_ns(path: Location) -> int:
    """When the file was last written (ns; 0 where a remote file system does not say)."""
    if isinstance(path, Path):
        return path.stat().st_mtime_ns
    fs, target = remote(path)
    try:
        return int(fs.modified(target).timestamp() * 1e9)
    except (NotImplementedError, AttributeError, OSError, ValueError, TypeError):
        return 0


def remove_file(path: str | os.PathLike) -> None:
    """Remove a file, local or remote; a missing one is no error."""
    path = location(path)
    if isinstance(path, Path):
        path.unlink(missing_ok=True)
        return
    fs, target = remote(path)
    if fs.exists(target):
        fs.rm_file(target)


def digest_path(path: str | os.PathLike) -> Location:
    """`X.ckpt` -> `X.ckpt.sha256` (local or remote)."""
    path = location(path)
    if isinstance(path, str):
        return path + DIGEST_SUFFIX
    return path.with_name(path.name + DIGEST_SUFFIX)


def read_digests(path: str | os.PathLike) -> list[str] | None:
    """The digests listed for checkpoint `path`; None when it has no digest file."""
    sidecar = digest_path(path)
    try:
        if isinstance(sidecar, Path):
            text = sidecar.read_text()
        else:
            fs, target = remote(sidecar)
            text = fs.cat_file(target).decode()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return []
    return [line.split()[0] for line in text.splitlines() if line.strip()]


def write_digests(path: str | os.PathLike, digests: list[str]) -> None:
    """The digest file of checkpoint `path`, atomically (locally: rename; remotely: one put)."""
    text = "".join(f"{d}  {base_name(path)}\n" for d in digests)
    sidecar = digest_path(path)
    if isinstance(sidecar, str):
        fs, target = remote(sidecar)
        fs.pipe_file(target, text.encode())
        return
    atomic_write(sidecar, lambda f: f.write(text.encode()), suffix=PARTIAL_SUFFIX)


def file_sha256(path: str | Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            sha.update(block)
    return sha.hexdigest()


def save_atomic(payload: Any, path: str | os.PathLike) -> str:
    """torch.save to a temporary file, fsync, digest file, rename, fsync the folder; the digest.
    A URL: torch.save to the object itself, then its digest file (see the module docstring)."""
    import torch

    path = location(path)
    if isinstance(path, str):
        return _save_remote(payload, path)
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


def _save_remote(payload: Any, url: str) -> str:
    """torch.save straight to the object `url`, hashing the bytes on the way, then its digest
    file. The fsspec transaction commits the object only when torch.save finished (an object
    store then completes the upload; an exception discards it), so no partial object takes the
    name."""
    import torch

    fs, target = remote(url)
    with fs.transaction, fs.open(target, "wb") as f:
        writer = HashingWriter(f)
        try:
            torch.save(payload, writer)
        except RuntimeError:
            if writer.error is None:
                raise
            raise writer.error from None  # torch's message has no errno
    digest = writer.sha.hexdigest()
    write_digests(url, [digest])
    return digest


def _read_remote(url: str, verify: bool) -> tuple[bytes, bool]:
    """The whole object `url` and whether its digest was checked (verify: it must match its
    digest file, when it has one); CheckpointError naming it otherwise."""
    fs, target = remote(url)
    try:
        data = fs.cat_file(target)
    except FileNotFoundError as e:
        raise CheckpointError(f"{url} does not exist") from e
    if not data:
        raise CheckpointError(f"{base_name(url)} is empty (a save that never finished)")
    if not verify:
        return data, False
    listed = read_digests(url)
    if listed is None:
        return data, False
    if hashlib.sha256(data).hexdigest() not in listed:
        raise CheckpointError(_mismatch(url))
    return data, True


def _mismatch(path: Location) -> str:
    # Remotely, the bytes are put before their digest: a save stopped between the two looks alike.
    why = "a failing disk, a bad copy" + (
        ", a save stopped before its digest" if isinstance(path, str) else ""
    )
    return (
        f"{base_name(path)} does not match its digest in {base_name(digest_path(path))}: its bytes "
        f"changed after it was written ({why})"
    )


def check_digest(path: str | os.PathLike) -> bool:
    """True when `path` matches its digest file, False when it has none; CheckpointError otherwise."""
    path = location(path)
    if isinstance(path, str):
        return _read_remote(path, verify=True)[1]
    listed = read_digests(path)
    if listed is None:
        return False
    st = path.stat()
    stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
    if VERIFIED.get(str(path.absolute())) == stamp:
        return True
    if file_sha256(path) not in listed:
        raise CheckpointError(_mismatch(path))
    VERIFIED[str(path.absolute())] = stamp
    return True


def load_checkpoint_file(
    path: str | os.PathLike,
    map_location: Any = "cpu",
    trust: bool = False,
    mmap: bool = False,
    verify: bool = False,
):
    """torch.load with weights_only unless trusted (after the digest check when `verify`); every
    failure becomes a one-line CheckpointError. A remote file is read whole (no mmap) and its
    digest checked on the bytes that are loaded."""
    import pickle

    import torch

    path = location(path)
    name = base_name(path)
    if isinstance(path, str):
        source: Any = io.BytesIO(_read_remote(path, verify)[0])
        mmap = False
    else:
        if not path.is_file():
            raise CheckpointError(f"{path} does not exist")
        if path.stat().st_size == 0:
            raise CheckpointError(f"{name} is empty (a save that never finished)")
        if verify:
            check_digest(path)
        source = path
    try:
        return torch.load(source, map_location=map_location, weights_only=not trust, mmap=mmap)
    except pickle.UnpicklingError as e:
        if trust:
            raise CheckpointError(f"{name} is corrupt: {first_line(e)}") from e
        raise CheckpointError(
            f"{name} needs unpickling code to load ({_unsafe_global(e)}), which can run anything: "
            "if you trust where it came from, add trust_checkpoint=true"
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{name} is corrupt or truncated ({first_line(e)})") from e


def _unsafe_global(e: BaseException) -> str:
    """The class or function torch refused, e.g. 'argparse.Namespace'."""
    import re

    found = re.search(r"GLOBAL ([\w.]+)", str(e))
    return found.group(1) if found else "a class or function"
