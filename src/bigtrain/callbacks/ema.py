"""Exponential moving average (EMA) of the weights, for validation, test and the exported weights.

After every optimizer step k:  ema = decay * ema + (1 - decay) * w_k  (float32 copies), starting
from the initial weights; until `start_step` the EMA just copies the weights. Validation runs on
the EMA weights (swapped in and back out), every checkpoint's `state_dict` holds the EMA weights
(so testing the best checkpoint tests the EMA, and exported weights are the EMA), and the raw
training weights travel in the checkpoint under "ema_training_weights" so that a resumed run
continues from them. When fit ends, the module keeps the EMA weights.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

TRAINING_KEY = "ema_training_weights"


class EMA(pl.Callback):
    def __init__(self, decay: float, start_step: int = 0) -> None:
        self.decay, self.start_step = decay, start_step
        self.ema: dict[str, torch.Tensor] | None = None
        self.updates = 0
        self._last_step = -1
        self._swapped: dict[str, torch.Tensor] | None = None
        self._resume_weights: dict[str, torch.Tensor] | None = None

    def _params(self, pl_module: pl.LightningModule) -> dict[str, torch.Tensor]:
        return dict(pl_module.named_parameters())

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        params = self._params(pl_module)
        if self.ema is None:
            self.ema = {n: p.detach().float().clone() for n, p in params.items()}
        else:
            self.ema = {n: t.to(params[n].device) for n, t in self.ema.items()}
        if self._resume_weights is not None:  # the checkpoint's state_dict held the EMA
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(self._resume_weights[n].to(p.device, p.dtype))
            self._resume_weights = None
        self._last_step = trainer.global_step

    @torch.no_grad()
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step == self._last_step:
            return  # an accumulation micro-batch: no optimizer step yet
        self._last_step = step
        decay = self.decay if step > self.start_step else 0.0
        for n, p in self._params(pl_module).items():
            self.ema[n].lerp_(p.detach().float(), 1.0 - decay)  # ema + (1-d)(w - ema)
        self.updates += 1

    @torch.no_grad()
    def _swap_in(self, pl_module: pl.LightningModule) -> None:
        if self.ema is None or self._swapped is not None:
            return
        params = self._params(pl_module)
        self._swapped = {n: p.detach().clone() for n, p in params.items()}
        for n, p in params.items():
            p.copy_(self.ema[n].to(p.dtype))

    @torch.no_grad()
    def _swap_out(self, pl_module: pl.LightningModule) -> None:
        if self._swapped is None:
            return
        for n, p in self._params(pl_module).items():
            p.copy_(self._swapped[n])
        self._swapped = None

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._swap_in(pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._swap_out(pl_module)

    @torch.no_grad()
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._swap_out(pl_module)
        for n, p in self._params(pl_module).items():  # keep the EMA: it is what is exported
            p.copy_(self.ema[n].to(p.dtype))

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self.ema is None:
            return
        state = checkpoint["state_dict"]
        training = {}
        for n, e in self.ema.items():
            raw = self._swapped[n] if self._swapped is not None else state[n]
            training[n] = raw.detach().cpu().clone()
            state[n] = e.to(state[n].dtype).cpu().clone()
        checkpoint[TRAINING_KEY] = training
        checkpoint["ema_updates"] = self.updates

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if TRAINING_KEY not in checkpoint:
            return
        self.ema = {n: checkpoint["state_dict"][n].float().clone() for n in checkpoint[TRAINING_KEY]}
        self._resume_weights = checkpoint[TRAINING_KEY]
        self.updates = checkpoint.get("ema_updates", 0)

    def summary(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "start_step": self.start_step}
