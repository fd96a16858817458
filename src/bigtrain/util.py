"""Helpers every layer may use: this process's rank, and durable atomic file writes.

Nothing here imports the rest of bigtrain (docs/architecture.md, "Layers"), so the bottom of the
package may use it as freely as the command line does.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

# Set by torchrun / Lightning's launcher, srun and jsrun: the whole job's rank where one is given.
GLOBAL_RANK_VARIABLES = ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")
# Set per node: without a global variable, any of them above zero means "not rank zero".
NODE_RANK_VARIABLES = ("NODE_RANK", "GROUP_RANK", "LOCAL_RANK")


def _int(value: str | None) -> int | None:
    value = (value or "").strip()
    return int(value) if value.isdigit() else None


def global_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's rank in the job, from its launcher's environment (0 when run alone).

    Lightning's own launcher sets only NODE_RANK and LOCAL_RANK (and LOCAL_WORLD_SIZE where it
    knows it) in the processes it starts, which also inherit their parent's SLURM_PROCID when the
    command runs inside a job without srun: a non-zero per-node rank therefore wins over a global
    variable that says 0."""
    env = os.environ if env is None else env
    node = _int(env.get("NODE_RANK")) or _int(env.get("GROUP_RANK")) or 0
    local = _int(env.get("LOCAL_RANK")) or 0
    per_node = _int(env.get("LOCAL_WORLD_SIZE"))
    from_node = node * per_node + local if per_node else max(node, local)
    for key in GLOBAL_RANK_VARIABLES:
        rank = _int(env.get(key))
        if rank is not None:
            return rank or from_node
    return from_node


def is_rank_zero(env: Mapping[str, str] | None = None) -> bool:
    """True unless the launcher's environment says this process is not the job's rank zero."""
    return global_rank(env) == 0


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None], suffix: str = ".tmp") -> None:
    """Write `path` so that readers and crashes only ever see the old or the new whole file:
    `write` fills a temporary file in the same folder, which is fsynced, renamed over `path`
    (atomic within one POSIX file system), and the folder fsynced so the rename is durable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    try:
        os.fchmod(fd, file_mode())  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_text_atomic(path: str | Path, text: str) -> None:
    """`text` (UTF-8) as the whole of `path`, atomically and durably (atomic_write)."""
    data = text.encode()
    atomic_write(path, lambda f: f.write(data))


def write_json_atomic(path: str | Path, payload: Mapping[str, Any]) -> None:
    """`payload` as indented JSON, atomically and durably; arrays and tensors become lists."""
    write_text_atomic(path, json.dumps(payload, indent=2, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def fsync_dir(folder: str | Path) -> None:
    """Make a rename inside `folder` durable."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def file_mode() -> int:
    """The mode a new file gets under the process's umask (mkstemp makes 0600)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask
