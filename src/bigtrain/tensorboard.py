"""TensorBoard logging with one event per logging call.

Lightning's TensorBoardLogger writes each scalar of a `log_metrics` call as its own event, and
each event is a hand-off to the writer's background thread: about 0.1-0.2 ms apiece on a CPU,
several percent of a small model's step when the loss, gradient norm, learning rates and epoch
are logged together. A TensorBoard event may carry many values (its Summary holds a list), so
this logger writes one event per call with every scalar in it. The files read back the same
(tests/test_fused.py reads them with TensorBoard's own reader). Dict values (grouped scalars)
still go through Lightning's path. build.py makes it without a key prefix, so keys are written
as given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightning_fabric.utilities.rank_zero import rank_zero_only
from pytorch_lightning.loggers import TensorBoardLogger


class OneEventTensorBoardLogger(TensorBoardLogger):
    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        values, grouped = [], {}
        for key, value in metrics.items():
            if isinstance(value, torch.Tensor):
                value = value.item()
            if isinstance(value, dict):
                grouped[key] = value
            else:
                values.append(Summary.Value(tag=key, simple_value=float(value)))
        if values:
            self.experiment._get_file_writer().add_summary(Summary(value=values), step)
        if grouped:
            super().log_metrics(grouped, step)
