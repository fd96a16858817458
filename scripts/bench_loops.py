"""Hand-written PyTorch training loops: a bigtrain run's work with no framework around it.

A loop trains one epoch per `epoch()` call over in-memory tensors, in the order bigtrain's
TensorLoader uses (one seeded permutation per epoch, one gather per batch), with the same model,
optimizer, schedule, loss and metrics (updated every step, computed every epoch). Every
`log_every_n_steps` optimizer steps it reads the loss, the gradient norm before clipping and the
learning rate and writes them to a CSV file, as bigtrain logs them. `between()` is what a
Lightning run does between two training epochs (the validation split with its loss and metrics,
then a checkpoint); it is not timed.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchmetrics

Batch = tuple[torch.Tensor, ...]
LossOut = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (loss, logits, targets)


def grad_norm(model: torch.nn.Module) -> torch.Tensor:
    """The L2 norm of all gradients, as bigtrain logs it (train/grad_norm)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norms = [torch.linalg.vector_norm(g, dtype=torch.float32) for g in grads]
    return torch.linalg.vector_norm(torch.stack(norms))


def steps_per_epoch(cfg: Any, samples: int) -> int:
    """Full batches of an epoch, capped by trainer.limit_train_batches (a count here)."""
    full = samples // cfg.data.batch_size
    limit = cfg.trainer.limit_train_batches
    return min(full, int(limit)) if limit else full


def epoch_order(cfg: Any, samples: int, epoch: int) -> torch.Tensor:
    """The epoch's seeded permutation of the training samples (every loop draws the same)."""
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
    return torch.randperm(samples, generator=gen)


class HandLoop:
    """A plain training loop; subclasses say what a batch's loss and metric inputs are."""

    def __init__(
        self,
        cfg: Any,
        model: torch.nn.Module,
        splits: dict[str, tuple[torch.Tensor, ...]],
        task: str,
        num_classes: int,
        workdir: Path,
        epochs: int,
    ) -> None:
        from bigtrain.training.metrics import build_metrics
        from bigtrain.training.optim import build_optimizer, build_scheduler

        self.cfg, self.model = cfg, model
        self.train, self.val = splits["train"], splits["val"]
        self.batch, t = cfg.data.batch_size, cfg.trainer
        self.steps_per_epoch = steps_per_epoch(cfg, len(self.train[0]))
        self.val_batches = int(t.limit_val_batches) if t.limit_val_batches else None
        self.optimizer = build_optimizer(cfg.optim, model)
        total = self.steps_per_epoch * epochs
        self.scheduler = build_scheduler(cfg.sched, self.optimizer, total)["scheduler"]
        names = cfg.metrics.names
        self.train_metrics = build_metrics(task, num_classes, names) if cfg.metrics.train else None
        self.val_metrics = build_metrics(task, num_classes, names)
        self.train_loss, self.val_loss = torchmetrics.MeanMetric(), torchmetrics.MeanMetric()
        self.every, self.clip = t.log_every_n_steps, t.gradient_clip_val
        workdir.mkdir(parents=True, exist_ok=True)
        self.file = (workdir / "metrics.csv").open("w", newline="")
        self.writer = csv.writer(self.file)
        self.checkpoint = workdir / "last.pt"
        self.global_step = self.epochs_run = 0

    def forward_loss(self, batch: Batch) -> LossOut:
        """(loss, logits, targets) of one batch."""
        raise NotImplementedError

    def metric_inputs(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(predictions, targets) as the metric collection takes them."""
        raise NotImplementedError

    def step(self, batch: Batch) -> None:
        """One optimizer step, with the loss, metric and logging work bigtrain does."""
        loss, logits, y = self.forward_loss(batch)
        self.train_loss.update(loss.detach(), weight=y.numel())
        if self.train_metrics is not None:
            self.train_metrics.update(*self.metric_inputs(logits, y))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        logs = (self.global_step + 1) % self.every == 0
        norm = grad_norm(self.model) if logs else None
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        if logs:
            lr = self.optimizer.param_groups[0]["lr"]
            self.writer.writerow([self.global_step, float(loss), float(norm), lr])
        self.optimizer.step()
        self.scheduler.step()
        self.global_step += 1

    def epoch(self) -> float:
        """One training epoch; seconds per optimizer step, from its start to its last step's end."""
        self.model.train()
        start = time.perf_counter()
        order = epoch_order(self.cfg, len(self.train[0]), self.epochs_run)
        b = self.batch
        for i in range(self.steps_per_epoch):
            idx = order[i * b : (i + 1) * b]
            self.step(tuple(t.index_select(0, idx) for t in self.train))
        seconds = (time.perf_counter() - start) / self.steps_per_epoch
        self.epochs_run += 1
        self.write_epoch("train", self.train_loss, self.train_metrics)
        return seconds

    def write_epoch(self, stage: str, loss: torchmetrics.Metric, metrics: Any) -> None:
        """The epoch's mean loss and metrics, computed, written as one row and reset."""
        values = {f"{stage}/loss": loss.compute()}
        loss.reset()
        if metrics is not None:
            values.update(metrics.compute())
            metrics.reset()
        self.writer.writerow([self.global_step, *(float(v) for v in values.values())])

    def between(self) -> None:
        """What a Lightning run does after a training epoch: validation, then a checkpoint."""
        self.model.eval()
        step, (first, *rest) = self.cfg.data.eval_batch_size, self.val
        with torch.no_grad():
            for n, start in enumerate(range(0, len(first), step)):
                if self.val_batches is not None and n >= self.val_batches:
                    break
                batch = (first[start : start + step], *(t[start : start + step] for t in rest))
                loss, logits, y = self.forward_loss(batch)
                self.val_loss.update(loss, weight=y.numel())
                self.val_metrics.update(*self.metric_inputs(logits, y))
        self.write_epoch("val", self.val_loss, self.val_metrics)
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}
        torch.save({**state, "scheduler": self.scheduler.state_dict()}, self.checkpoint)
        self.model.train()

    def close(self) -> None:
        """Flush and close the CSV file."""
        self.file.close()


class HandClassifier(HandLoop):
    """The digits MLP's loop: cross-entropy, metrics on softmax probabilities."""

    def forward_loss(self, batch: Batch) -> LossOut:
        x, y = batch
        logits = self.model(x)
        return F.cross_entropy(logits, y), logits, y

    def metric_inputs(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.softmax(logits.detach().float(), dim=-1), y


class HandLanguageModel(HandLoop):
    """The Transformer's loop: next-token cross-entropy over windows of seq_len + 1 tokens."""

    def forward_loss(self, batch: Batch) -> LossOut:
        (windows,) = batch
        x, y = windows[:, :-1].long(), windows[:, 1:].long()
        logits = self.model(x)
        return F.cross_entropy(logits.flatten(0, 1), y.flatten()), logits, y

    def metric_inputs(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return logits.detach().argmax(-1).flatten(), y.flatten()
