"""Preemption under SLURM: on the warning signal, checkpoint at the next epoch end and stop.

SLURM sends SIGUSR1 ahead of the time limit (`#SBATCH --signal=USR1@90`). Lightning's own
handler saves at once, in the middle of an epoch, and a mid-epoch checkpoint does not resume
to the same numbers (the rest of that epoch's batches and the random state are not in it).
This callback instead lets the epoch finish (validation included), saves `hpc_ckpt_N.ckpt` in
the run directory, and stops training; build.py then writes results.json with status
`requeued` and asks SLURM to requeue the job. The requeued job resolves the same run directory
(named after the job id) and resumes from the newest hpc_ckpt, so it ends on the same step with
the same metrics as a run that was never interrupted. Set the signal lead time longer than
one epoch plus a checkpoint write.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from bigtrain.cluster.slurm import newest_hpc_checkpoint


class RequeueOnSignal(pl.Callback):
    def __init__(self, run_dir: str | Path, signum: int = signal.SIGUSR1) -> None:
        self.run_dir = Path(run_dir)
        self.signum = signum
        self.signalled = False  # set by the handler, read at the next epoch end
        self.saved: Path | None = None  # the checkpoint written before stopping
        self._previous: Any = None

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signalled = True

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # setup runs before Lightning registers its handlers, which then leave this one alone.
        if stage == "fit" and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(self.signum, self._on_signal)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._previous is not None:
            signal.signal(self.signum, self._previous)
            self._previous = None

    @property
    def requeue_requested(self) -> bool:
        return self.saved is not None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Every rank gets the signal, but not at the same instant: agree (any rank) so that all
        # stop after the same epoch. One all-reduce of a flag per epoch.
        stop = trainer.strategy.reduce_boolean_decision(self.signalled, all=False)
        last_epoch = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
        if not stop or last_epoch or trainer.should_stop:
            return
        _, n = newest_hpc_checkpoint(self.run_dir)
        self.saved = self.run_dir / f"hpc_ckpt_{n + 1}.ckpt"
        trainer.save_checkpoint(self.saved)
        trainer.should_stop = True
