"""A test's own Lightning callbacks that stop a run at a chosen point, so the test can apply a real
fault there (a signal from outside, a full or read-only file system, a second command), and the
helpers the test drives them with.

The product has no fault hooks; these are given to a run like any user's callback
(`callbacks.extra=[{_target_: fault_callbacks.Gate, ...}]`, with tests/ on PYTHONPATH).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch


class Gate(pl.Callback):
    """At the end of the batch that reaches optimizer step `step`, write `<folder>/reached` (this
    process's PID) and wait until `<folder>/release` exists; later passes go straight through."""

    def __init__(self, step: int, folder: str, timeout: float = 120.0) -> None:
        self.step, self.folder, self.timeout = step, Path(folder), timeout

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        release = self.folder / "release"
        if trainer.global_step != self.step or release.exists():
            return
        (self.folder / "reached").write_text(str(os.getpid()))
        deadline = time.monotonic() + self.timeout
        while not release.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the test never released the gate at step {self.step}")
            time.sleep(0.02)


class KillAtEpochStart(pl.Callback):
    """SIGKILL this process when epoch `epoch` starts, once (`marker` records that it happened)."""

    def __init__(self, epoch: int, marker: str) -> None:
        self.epoch, self.marker = epoch, Path(marker)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch and not self.marker.exists():
            self.marker.write_text(str(trainer.global_step))
            os.kill(os.getpid(), signal.SIGKILL)


class SaveFinalWeights(pl.Callback):
    """The module's weights when training ends, to `path` (outside the run's own checkpoints)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_end(self, trainer, pl_module) -> None:
        torch.save({k: v.detach().clone() for k, v in pl_module.state_dict().items()}, self.path)


# --------------------------------------------------------------------------- the test's side


def start_run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    """`bigtrain ARGS` in the background (stderr kept, stdout dropped)."""
    full = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    full.update(env)
    return subprocess.Popen(
        [sys.executable, "-m", "bigtrain", *args],
        cwd=cwd,
        env=full,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def gate_at(step: int, folder: Path) -> str:
    """The override that holds a run at `step` until the test releases it."""
    folder.mkdir(parents=True, exist_ok=True)
    return f"callbacks.extra=[{{_target_: fault_callbacks.Gate, step: {step}, folder: '{folder}'}}]"


def wait_at_gate(proc: subprocess.Popen, folder: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not (folder / "reached").exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before the gate: {proc.stderr.read()[-3000:]}")
        assert time.monotonic() < deadline, "the run never reached the gate"
        time.sleep(0.05)


def release(proc: subprocess.Popen, folder: Path) -> tuple[int, list[str]]:
    """Let the run go on; its exit code and stderr lines once it ends."""
    (folder / "release").touch()
    _, err = proc.communicate(timeout=180)
    return proc.returncode, err.strip().splitlines()


def fill(folder: Path) -> Path:
    """Fill the file system of `folder` to the last byte; the file to delete to free it."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for block in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * block)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler
