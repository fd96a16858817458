"""A rich progress bar that redraws at most every `interval` seconds.

Lightning's RichProgressBar re-reads every logged metric and redraws after each batch; on small
models that is a large share of the step time. A person cannot read faster than a few redraws
per second, so drawing on a clock costs nothing they can see and gives the time back.
"""

from __future__ import annotations

import time

from pytorch_lightning.callbacks import RichProgressBar


class ThrottledRichProgressBar(RichProgressBar):
    def __init__(self, interval: float = 0.25, **kwargs) -> None:
        super().__init__(**kwargs)
        self.interval = interval
        self._last_draw = 0.0

    def _due(self, batch_idx: int, total: int | float | None) -> bool:
        now = time.monotonic()
        last_batch = total is not None and batch_idx + 1 >= total
        if last_batch or now - self._last_draw >= self.interval:
            self._last_draw = now
            return True
        return False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.train_progress_bar_id is None or self._due(batch_idx, self.total_train_batches):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ):
        if self._due(batch_idx, self.total_val_batches_current_dataloader):
            super().on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0):
        if self._due(batch_idx, self.total_test_batches_current_dataloader):
            super().on_test_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
