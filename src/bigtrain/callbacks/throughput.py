"""Training throughput: samples per second over all processes, after a short warm-up.

The clock runs from the end of one training batch to the end of the next, so the time to fetch
a batch counts; validation, checkpointing and the first `warmup` batches (allocator and cache
warm-up) do not.
"""

from __future__ import annotations

import time

import pytorch_lightning as pl


class Throughput(pl.Callback):
    def __init__(self, warmup: int = 5) -> None:
        self.warmup = warmup
        self.seconds = 0.0
        self.samples = 0
        self._seen = 0
        self._last: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last = time.perf_counter()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last = None  # validation time is not training time

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        self._seen += 1
        if self._last is not None and self._seen > self.warmup:
            self.seconds += now - self._last
            self.samples += len(batch[0]) * trainer.world_size
        self._last = now

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.seconds > 0:
            pl_module.log("perf/samples_per_s", self.samples / self.seconds, rank_zero_only=True)

    def summary(self) -> dict:
        rate = self.samples / self.seconds if self.seconds > 0 else None
        return {"samples_per_s": rate, "tokens_per_s": None, "mfu": None}
