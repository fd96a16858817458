"""The one LightningModule: every task is a model, a loss and a metric collection.

Logged keys: `train/loss` (every `log_every_n_steps`), `train/loss_epoch` and `train/<metric>`
per epoch, `val/<metric>` and `val/loss` per validation run, `test/<metric>` and `test/loss`.
Losses over an epoch are sample-weighted means synced across processes by torchmetrics, so they
are the same on 1 or N processes.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from bigtrain.metrics import build_curves, build_metrics, lm_from_loss
from bigtrain.optim import build_optimizer, build_scheduler

# What the progress bar shows besides train/loss; everything is in the logs.
PROGRESS_KEYS = {"val/loss", "val/acc", "val/ppl"}


class BigtrainModule(pl.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        *,
        task: str,
        num_classes: int,
        optim: Any,
        sched: Any,
        metric_names: list[str],
        train_metrics: bool = True,
        hparams: dict | None = None,
        bytes_per_token: float = 1.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.task, self.num_classes = task, num_classes
        self.optim_cfg, self.sched_cfg = optim, sched
        self.train_metrics_on = train_metrics
        self.metric_names, self.bytes_per_token = list(metric_names), bytes_per_token
        # Plain dicts only: checkpoints must load with torch.load(weights_only=True).
        self.save_hyperparameters(hparams or {}, logger=True)
        base = build_metrics(task, num_classes, metric_names)
        # Keyed by stage; "fit" stands for training because nn.Module already has a `train`.
        self.stage_metrics = nn.ModuleDict(
            {"val": base.clone(prefix="val/"), "test": base.clone(prefix="test/")}
        )
        if train_metrics:
            self.stage_metrics["fit"] = base.clone(prefix="train/")
        self.stage_loss = nn.ModuleDict({s: torchmetrics.MeanMetric() for s in ("fit", "val", "test")})
        self.curves = build_curves(task, num_classes)
        self.test_artifacts: dict[str, Any] = {}
        # One dict per epoch of the epoch-level values logged (for plots and results.json).
        self.history: list[dict[str, float]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    # ------------------------------------------------------------------ loss and probabilities

    def loss_and_probs(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.task == "binary":
            logits = logits.squeeze(-1)
            loss = F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype))
            return loss, torch.sigmoid(logits.detach().float())
        loss = F.cross_entropy(logits, y)
        return loss, torch.softmax(logits.detach().float(), dim=-1)

    def _lm_step(self, batch: tuple[torch.Tensor], stage: str) -> torch.Tensor:
        """Next-token cross-entropy averaged over every token of the micro-batch. Micro-batches
        hold the same number of tokens, so the mean over micro-batches and devices is exact."""
        (windows,) = batch
        x, y = windows[:, :-1].long(), windows[:, 1:].long()
        logits = self(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        self.stage_loss[stage].update(loss.detach(), weight=y.numel())
        if stage in self.stage_metrics:
            self.stage_metrics[stage].update(logits.detach().argmax(-1).flatten(), y.flatten())
        return loss

    def _shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        if self.task == "lm":
            return self._lm_step(batch, stage)
        x, y = batch
        loss, probs = self.loss_and_probs(self(x), y)
        self.stage_loss[stage].update(loss.detach(), weight=y.numel())
        if stage in self.stage_metrics:
            self.stage_metrics[stage].update(probs, y)
        if stage == "test":
            self.curves.update(probs, y)
        return loss

    # ------------------------------------------------------------------ Lightning hooks

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self._shared_step(batch, "fit")
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def _log_epoch(self, stage: str) -> None:
        loss_key = "train/loss_epoch" if stage == "fit" else f"{stage}/loss"
        values = {loss_key: self.stage_loss[stage].compute()}
        if stage in self.stage_metrics:
            values.update(self.stage_metrics[stage].compute())
            self.stage_metrics[stage].reset()
        self.stage_loss[stage].reset()
        if self.task == "lm":
            prefix = "train" if stage == "fit" else stage
            derived = lm_from_loss(float(values[loss_key]), self.metric_names, self.bytes_per_token)
            values.update({f"{prefix}/{k}": torch.tensor(v) for k, v in derived.items()})
        # Values are already synced across processes by torchmetrics' compute().
        self.log_dict({k: v for k, v in values.items() if k not in PROGRESS_KEYS}, sync_dist=False)
        self.log_dict({k: v for k, v in values.items() if k in PROGRESS_KEYS}, prog_bar=True, sync_dist=False)
        if stage != "test" and not self.trainer.sanity_checking:
            self._record(values)

    def _record(self, values: dict[str, torch.Tensor]) -> None:
        row = {k: float(v) for k, v in values.items()}
        if self.history and self.history[-1]["step"] == self.global_step:
            self.history[-1].update(row)
        else:
            self.history.append({"epoch": self.current_epoch, "step": self.global_step, **row})

    def on_train_epoch_end(self) -> None:
        self._log_epoch("fit")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
        if self.task == "lm":
            return
        curves = self.curves.compute()
        self.curves.reset()
        fpr, tpr, _ = curves["roc"]
        self.test_artifacts = {
            "confusion_matrix": curves["confusion_matrix"].cpu(),
            "roc": (_to_cpu(fpr), _to_cpu(tpr)),
        }

    def configure_optimizers(self):
        optimizer = build_optimizer(self.optim_cfg, self.model)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": build_scheduler(self.sched_cfg, optimizer, total)}


def _to_cpu(value):
    if isinstance(value, (list, tuple)):
        return [v.cpu() for v in value]
    return value.cpu()
