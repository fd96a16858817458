"""Exponential moving average (EMA) of the weights, for validation, test and the exported weights.

After every optimizer step k:  ema = decay * ema + (1 - decay) * w_k, starting from the initial
weights; until `start_step` the EMA just copies the weights. Validation runs on the EMA weights,
every checkpoint's `state_dict` holds them (so testing the best checkpoint tests the EMA, and
exported weights are the EMA), and the training weights travel in the checkpoint under
"current_model_state" so that a resumed run continues from them. When training ends, the module
keeps the EMA weights.

Lightning's `WeightAveraging` (torch's `AveragedModel` inside) does the averaging, the swap around
validation, the checkpoint layout and the final copy. This subclass adds what it does not do:

- the average starts from the initial weights (Lightning's first update would copy the weights
  after the first step): `setup` records them as the first average;
- a plain copy until `start_step` (the averaging function);
- only parameters are averaged (`use_buffers=False`): buffers follow the model;
- testing a checkpoint tests its `state_dict`, the EMA (outside fit, Lightning would load the
  training weights back into the module);
- `summary()` for results.json, with the count of updates carried across a resume;
- checkpoints of the earlier, hand-written EMA ("ema_training_weights") still resume.

The average is a float32 copy of the module made before precision plugins convert it. One
difference to a separate float32 copy: with a "-true" precision (bf16-true, 16-true) Lightning
swaps the average through the module's parameters, so it is rounded to their dtype at every
validation, and checkpoints hold it in float32. Sharded models (fsdp, tp) are not supported by
Lightning's callback.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import WeightAveraging

LEGACY_KEY = "ema_training_weights"


class EMA(WeightAveraging):
    """Lightning's weight averaging with bigtrain's EMA recurrence and results block."""

    def __init__(self, decay: float, start_step: int = 0, warn_on_configure_model: bool = False) -> None:
        super().__init__(use_buffers=False, avg_fn=self._average)
        self.decay, self.start_step = decay, start_step
        self.updates = 0
        self._warn = warn_on_configure_model
        self._copying = False
        self._seeding = False
        self._restoring = True

    def _average(self, ema: torch.Tensor, weights: torch.Tensor, _: Any) -> torch.Tensor:
        weights = weights.to(ema.dtype)
        return weights if self._copying else ema.lerp(weights, 1.0 - self.decay)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """Every optimizer step (counted); an epoch end only for the initial record in setup."""
        if step_idx is not None:
            self._copying = step_idx + 1 <= self.start_step
            self.updates += 1
            return True
        return self._seeding

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        with warnings.catch_warnings():
            if not self._warn:  # bigtrain's configure_model shards nothing outside fsdp/tp
                warnings.filterwarnings("ignore", message=".*overrides the configure_model")
            super().setup(trainer, pl_module, stage)
        if stage == "fit":
            # Lightning's epoch-end update, asked for once here, makes the initial weights the
            # first average; a checkpoint restored after this replaces it.
            self._seeding = True
            try:
                super().on_train_epoch_end(trainer, pl_module)
            finally:
                self._seeding = False

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._restoring = trainer.state.fn == "fit"
        if not self._restoring:
            return  # testing or exporting a checkpoint uses its state_dict: the EMA
        legacy = checkpoint.pop(LEGACY_KEY, None)
        if legacy is not None and "current_model_state" not in checkpoint:
            checkpoint["current_model_state"] = {**checkpoint["state_dict"], **legacy}
            updates = checkpoint.get("ema_updates", 0)
            checkpoint["averaging_state"] = {"n_averaged": torch.tensor(updates + 1)}
            self.updates = updates
        super().on_load_checkpoint(trainer, pl_module, checkpoint)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "updates": self.updates}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self._restoring:
            super().load_state_dict(state_dict)
            self.updates = state_dict.get("updates", 0)

    def summary(self) -> dict:
        """The results.json block: decay, optimizer steps averaged, start_step."""
        return {"decay": self.decay, "updates": self.updates, "start_step": self.start_step}
