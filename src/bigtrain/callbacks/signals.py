"""SIGTERM and SIGINT: stop at the next optimizer step with a checkpoint, then exit non-zero.

Schedulers (Kubernetes, `scancel`, a cloud's pre-emption) send SIGTERM and kill the process some
seconds later; a person presses Ctrl-C (SIGINT). runs/train.py installs `SignalStop` for the whole
run. The first signal during training is noted; at the next training batch end that completes an
optimizer step (all ranks agree on it), if the signal came less than GRACE_S seconds ago, the run
writes checkpoints/last.ckpt through the Trainer's atomic writer and raises `RunInterrupted`. The
command then prints one line saying where to resume and exits with 128 + the signal number (130
for SIGINT, 143 for SIGTERM). During validation or testing the run stops at the next batch without
a new checkpoint (with several processes: at the end of that loop); outside the Trainer, and on a
second signal, it stops at once.

Lightning's own SIGTERM handler, registered at the start of every fit and test, would make its
loops stop at the very next batch end, also in the middle of gradient accumulation, and in a
multi-process run it broadcasts from inside the handler (on the ranks that got the signal only).
SignalStop is installed before the Trainer starts, so Lightning's handler calls it as the handler
it found; when each loop starts (sanity check, training, testing: after Lightning registered its
handler for the stage) SignalStop takes SIGTERM and SIGINT back, so that training stops at an
optimizer step every rank agrees on. When a stage ends, Lightning puts back the handlers it found
(SignalStop's); leaving the `with` block puts back the ones from before the run. A SystemExit from
Lightning's own stop in the short window before a loop starts is reported the same way
(runs/train.py). SLURM's SIGUSR1 (callbacks/requeue.py) is left alone.

SignalStop is a Lightning `Checkpoint`, so it runs after every other callback (and after the
checkpoint callbacks listed before it): the checkpoint it writes holds that step's EMA update and
step checkpoint bookkeeping.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint

from bigtrain.training.checkpoint_files import child

SIGNALS = (signal.SIGINT, signal.SIGTERM)
# A signal older than this at the next step boundary gets no checkpoint: the kill that usually
# follows (SLURM's KillWait, Kubernetes' grace period: 30 s by default) may be close.
GRACE_S = 10.0
LAST = "last.ckpt"


class RunInterrupted(BaseException):
    """A run stopped by SIGTERM or SIGINT. Like KeyboardInterrupt it is not an Exception, so no
    `except Exception` on the way swallows it; str() is the line the command prints."""

    def __init__(self, signum: int, step: int | None = None, saved: Path | None = None) -> None:
        super().__init__(signum, step, saved)
        self.signum, self.step, self.saved = signum, step, saved
        self.line = f"interrupted by {self.signal_name}"

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        return self.line


class SignalStop(Checkpoint):
    """Installs the handlers (as a context manager) and stops the Trainer (as its callback)."""

    def __init__(self, ckpt_dir: str | Path, grace_s: float = GRACE_S) -> None:
        self.path = child(ckpt_dir, LAST)  # a local folder or an fsspec URL (checkpoint_dir)
        self.grace_s = grace_s
        self.signum: int | None = None
        self.noted_at = 0.0
        self.deferring = False  # a Trainer is running: its next batch end acts on the signal
        self.before: dict[int, Any] = {}

    def __enter__(self) -> SignalStop:
        if threading.current_thread() is threading.main_thread():
            self.before = {s: signal.signal(s, self.handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.before.items():
            signal.signal(signum, handler)
        self.before = {}

    def handle(self, signum: int, frame: Any) -> None:
        if self.signum is None and self.deferring:
            self.signum, self.noted_at = signum, time.monotonic()
            return
        self.signum = self.signum or signum
        raise RunInterrupted(signum)

    # ------------------------------------------------------------------ as a Trainer callback

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.deferring = bool(self.before)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.deferring = False

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self.deferring = False

    # Each loop starts after Lightning registered its SIGTERM handler for the stage: take it back.
    def take_signals(self) -> None:
        if self.before:
            for signum in SIGNALS:
                signal.signal(signum, self.handle)

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.take_signals()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.take_signals()

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.take_signals()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self.at_step_boundary(trainer, batch_idx) or not self.agreed(trainer, self.signum is not None):
            return
        recent = self.signum is not None and time.monotonic() - self.noted_at <= self.grace_s
        saved = None
        if self.agreed(trainer, recent):
            trainer.save_checkpoint(self.path)
            saved = self.path
        raise RunInterrupted(self.signum or signal.SIGTERM, trainer.global_step, saved)

    # Evaluation: at the next batch alone; with several processes at the end of the loop, since
    # ranks may hold different numbers of evaluation batches (a per-batch all-reduce would hang).
    def on_validation_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        self.stop_evaluating(trainer, batch_end=True)

    def on_test_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        self.stop_evaluating(trainer, batch_end=True)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stop_evaluating(trainer, batch_end=False)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stop_evaluating(trainer, batch_end=False)

    def stop_evaluating(self, trainer: pl.Trainer, batch_end: bool) -> None:
        if batch_end and trainer.world_size > 1:
            return
        if self.agreed(trainer, self.signum is not None):
            raise RunInterrupted(self.signum or signal.SIGTERM, trainer.global_step, None)

    @staticmethod
    def at_step_boundary(trainer: pl.Trainer, batch_idx: int) -> bool:
        """The batch just ended with an optimizer step (not in the middle of an accumulation):
        a multiple of the accumulation, or the epoch's last batch (Lightning steps there too)."""
        every = trainer.accumulate_grad_batches
        return (batch_idx + 1) % every == 0 or batch_idx + 1 >= trainer.num_training_batches

    @staticmethod
    def agreed(trainer: pl.Trainer, mine: bool) -> bool:
        """True on every rank when it is true on any (one all-reduce of a flag in multi-process runs)."""
        if trainer.world_size > 1:
            return bool(trainer.strategy.reduce_boolean_decision(mine, all=False))
        return mine
