"""Records what precision actually did: the dtype of the weights and of the forward's output.

`trainer.precision=bf16-mixed` keeps float32 weights and runs matmuls in bfloat16 under autocast;
`bf16-true` casts the weights themselves. The first training batch's forward output shows which
one happened; results.json gets it as results["precision"].
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch


class PrecisionProbe(pl.Callback):
    def __init__(self, setting: str) -> None:
        self.setting = setting
        self.param_dtype: str | None = None
        self.forward_dtype: str | None = None
        self._handle: Any = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        def record(module: torch.nn.Module, args: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor) and self.forward_dtype is None:
                self.forward_dtype = str(output.dtype).removeprefix("torch.")
                self._handle.remove()

        self.param_dtype = str(next(pl_module.parameters()).dtype).removeprefix("torch.")
        self._handle = pl_module.register_forward_hook(record)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._handle is not None:
            self._handle.remove()

    def summary(self) -> dict:
        return {"setting": self.setting, "param_dtype": self.param_dtype, "forward_dtype": self.forward_dtype}
