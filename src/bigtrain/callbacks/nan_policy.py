"""What a non-finite (NaN or infinite) training loss does: `stop` or `skip`.

The module asks this policy about every training loss before its backward (module.loss_gate),
so a bad batch never reaches the weights. It is not a callback: it needs no hook of its own. The decision is synced over processes (any rank's
bad loss counts for all), so all ranks stop or skip together.

- stop: save the current weights, which are the last finite ones (the bad batch was not applied),
  to last-finite.ckpt in the checkpoint folder (checkpoints/, or checkpoint_dir), and end the run
  with an error naming the step and the file.
- skip: drop the batch (no backward, no update from it; under accumulation only that micro-batch
  is dropped), record where it was, and stop as above after `max_consecutive` in a row.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch

from bigtrain.training.checkpoint_files import child


class NonFiniteLossError(RuntimeError):
    """Training stopped on a non-finite loss; the message names the step."""


class NonFinitePolicy:
    def __init__(
        self, policy: str, max_consecutive: int, ckpt_dir: str | Path, shown: str = "checkpoints"
    ) -> None:
        """`ckpt_dir`: the checkpoint folder (local, or an fsspec URL); `shown`: that folder as
        the error line names it (relative to the run directory where it is inside it)."""
        self.policy, self.max_consecutive = policy, max_consecutive
        self.ckpt_dir, self.shown = ckpt_dir, shown
        self.skipped: list[dict] = []
        self.consecutive = 0
        self.stopped_at_step: int | None = None

    def attach(self, module: pl.LightningModule) -> None:
        """Make `module` ask this policy about each training loss."""
        # Returning None from training_step is how the batch is skipped; Lightning warns each time.
        warnings.filterwarnings("ignore", message=".*training_step. returned .None.")
        # A plain function, not a bound method: deep copies of the module (SWA) keep calling us.
        module.loss_gate = lambda m, loss: self.check(m.trainer, loss, m.batch_in_epoch)

    def check(self, trainer: pl.Trainer, loss: torch.Tensor, batch_index: int = 0) -> bool:
        """True to train on this loss; False to skip it; raises NonFiniteLossError to stop."""
        # One read-back of the scalar loss; isfinite(...).all() would add two kernels a step.
        bad = not math.isfinite(float(loss.detach()))
        bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            self.consecutive = 0
            return True
        where = {"step": trainer.global_step, "epoch": trainer.current_epoch, "batch": batch_index}
        if self.policy == "skip":
            self.consecutive += 1
            self.skipped.append(where)
            if self.consecutive < self.max_consecutive:
                return False
            reason = f"{self.consecutive} non-finite training losses in a row"
        else:
            reason = f"non-finite training loss ({float(loss):g})"
        self.stopped_at_step = trainer.global_step
        name = "last-finite.ckpt"
        trainer.save_checkpoint(child(self.ckpt_dir, name))
        raise NonFiniteLossError(
            f"{reason} at optimizer step {where['step']} (epoch {where['epoch']}, batch {where['batch']}); "
            f"tricks.nonfinite.policy={self.policy} stopped training; the last finite weights are in "
            f"{child(self.shown, name)}"
        )

    def summary(self) -> dict:
        return {
            "policy": self.policy,
            "skipped": len(self.skipped),
            "skipped_batches": self.skipped,
            "stopped_at_step": self.stopped_at_step,
        }
