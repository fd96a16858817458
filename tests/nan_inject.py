"""A test's own Lightning callback that fills training inputs with NaN at chosen optimizer steps.

The product has no fault hooks; tests reach a non-finite loss through this callback, given to a
run like any user's callback (`callbacks.extra=[{_target_: nan_inject.InjectNaN, steps: [2]}]`,
with tests/ on PYTHONPATH) or appended to the callbacks of an in-process Trainer.
"""

from __future__ import annotations

import pytorch_lightning as pl


class InjectNaN(pl.Callback):
    def __init__(self, steps: list[int]) -> None:
        self.steps = set(steps)
        self.injected: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        step = trainer.global_step
        first_micro = batch_idx % trainer.accumulate_grad_batches == 0
        if step in self.steps and first_micro and step not in self.injected:
            batch[0].fill_(float("nan"))  # the micro-batch is a copy: the data set is untouched
            self.injected.append(step)


def extra(steps: list[int]) -> str:
    """The override that adds this callback to a run."""
    return f"callbacks.extra=[{{_target_: nan_inject.InjectNaN, steps: [{','.join(map(str, steps))}]}}]"
