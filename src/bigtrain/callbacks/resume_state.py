"""What a checkpoint must carry besides weights, optimizer and loops for a resumed run to end
like an uninterrupted one: how often the run was resumed, and the module's per-epoch history
(results.json's `val` is the history row of the best checkpoint, which may predate the resume).

Stored under one checkpoint key as plain ints, floats and strings, so checkpoints still load
with torch.load(weights_only=True).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn

CHECKPOINT_KEY = "bigtrain_run"


class ResumeState(pl.Callback):
    def __init__(self) -> None:
        self.resumed = 0

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        checkpoint[CHECKPOINT_KEY] = {"resumed": self.resumed, "history": list(pl_module.history)}

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        # Testing the best checkpoint loads it too: only a fit that starts from a checkpoint
        # is a resume, and only then does the history of the run before it come back.
        state: dict[str, Any] = checkpoint.get(CHECKPOINT_KEY, {})
        if trainer.state.fn != TrainerFn.FITTING:
            return
        self.resumed = int(state.get("resumed", 0)) + 1
        pl_module.history = [dict(row) for row in state.get("history", [])]
