"""One owner per run directory: an exclusive lock held for the whole run.

`hold(run_dir)` takes `fcntl.flock(LOCK_EX)` on `<run_dir>/.bigtrain.lock` through a descriptor
that stays open until the run ends, and writes the owner's PID and host into the file. The kernel
drops the lock when the descriptor closes, however the process ends (SIGKILL, an OOM kill), so a
lock is never stale. A second run in the directory, or `bigtrain resume=DIR` of a run that is still
alive, is refused with one line naming the owner; `check_free` makes the same test as a probe
(lock and release at once) before Hydra writes anything into the directory.

Only global rank zero takes the lock: the other processes of a multi-process run (relaunched by
Lightning with rank zero's hydra.run.dir, or started by torchrun or srun) join the directory that
rank zero holds. The held descriptor is read-only (the owner line goes through a second one, closed
at once), so a held lock never stops a file system from being remounted read-only. Where the file
system has no flock (some Lustre and NFS mounts) the run goes on unlocked, with a warning.

No torch here: the command checks the lock before importing anything heavy.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bigtrain.runs.rundir import RunDirError
from bigtrain.util import is_rank_zero

LOCK_FILE = ".bigtrain.lock"
# A probe by another command holds the lock for an instant: try this often, 50 ms apart.
ACQUIRE_TRIES = 20
# Run directories this process holds (resolved path -> descriptor): the command takes the lock
# before Hydra writes anything, and the run inside it finds the lock already its own.
_HELD: dict[str, int] = {}


class RunDirBusy(RunDirError):
    """The run directory belongs to a live run; the message names it and says what to do."""


def owner(run_dir: str | Path) -> str:
    """'PID 1234 on host node7': who holds (or last held) the lock of `run_dir`."""
    try:
        fields = (Path(run_dir) / LOCK_FILE).read_text().split()
    except OSError:
        fields = []
    if len(fields) >= 2 and fields[0].isdigit():
        return f"PID {fields[0]} on host {fields[1]}"
    return "another process (it has not written its PID yet)"


def busy(run_dir: str | Path) -> RunDirBusy:
    return RunDirBusy(
        f"run directory {run_dir} is in use by {owner(run_dir)}: wait for that run to end or stop it "
        "(a killed run frees it at once), or choose another hydra.run.dir"
    )


def check_free(run_dir: str | Path) -> None:
    """Raise RunDirBusy if a live run holds `run_dir`; writes nothing (a lock and release at once)."""
    if not is_rank_zero() or str(Path(run_dir).resolve()) in _HELD:
        return
    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return  # never locked (or unreadable: the run will say why when it starts)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise busy(run_dir) from None
    except OSError:
        return  # no flock on this file system: `hold` warns when the run starts
    finally:
        os.close(fd)  # also releases the shared lock just taken


@contextmanager
def hold(run_dir: str | Path) -> Iterator[None]:
    """Own `run_dir` for the duration of the block (rank zero only); RunDirBusy if a live run has it."""
    key = str(Path(run_dir).resolve())
    if not is_rank_zero() or key in _HELD:  # another rank's, or this process holds it already
        yield
        return
    fd = take(Path(run_dir))
    if fd is not None:
        _HELD[key] = fd
    try:
        yield
    finally:
        if fd is not None:
            del _HELD[key]
            os.close(fd)  # releases the lock; the file stays, naming the last owner


def take(run_dir: Path) -> int | None:
    """Lock `run_dir` and write the owner line; the descriptor to close at the end (None: unlocked)."""
    path = run_dir / LOCK_FILE
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        # O_NOFOLLOW: a lock file planted as a link must not lead the owner line elsewhere.
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        raise RunDirError(
            f"run directory {run_dir} cannot be locked ({e.strerror}): choose a folder you can write to"
        ) from e
    for attempt in range(ACQUIRE_TRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if attempt == ACQUIRE_TRIES - 1:
                os.close(fd)
                raise busy(run_dir) from None
            time.sleep(0.05)
        except OSError as e:
            os.close(fd)
            sys.stderr.write(
                f"bigtrain: warning: run directory {run_dir} cannot be locked ({e.strerror}): nothing "
                "stops a second run from writing into it at the same time\n"
            )
            return None
    try:
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW), "w") as f:
            f.write(f"{os.getpid()} {socket.gethostname()}\n")
    except OSError:
        pass  # the lock is held all the same; a refused run then cannot name the owner
    return fd
