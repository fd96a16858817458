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
from pytorch_lightning.trainer.states import TrainerFn
from torch import nn

from bigtrain.training.accumulation import StepTokenMean
from bigtrain.training.metrics import build_curves, build_metrics, ctc_greedy, label_text, lm_from_loss
from bigtrain.training.optim import build_optimizer, build_scheduler

# What the progress bar shows besides train/loss; everything is in the logs.
PROGRESS_KEYS = {"val/loss", "val/acc", "val/ppl"}
# The checkpoint key of what a resumed run needs besides weights, optimizer and loops.
RUN_STATE_KEY = "bigtrain_run"
# The checkpoint key of the data's preprocessing (data/preprocess.py), for predictions.
PREPROCESSING_KEY = "bigtrain_preprocessing"


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
        label_smoothing: float = 0.0,
        log_grad_norm: bool = False,
        parallel: Any = None,
        num_nodes: int = 1,
        bytes_per_token: float = 1.0,
        target_stats: tuple[float, float] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        if task == "regression":
            # The model regresses (y - mean) / std of the train split; saved with the weights so
            # that a checkpoint predicts in the target's units.
            mean, std = target_stats or (0.0, 1.0)
            self.register_buffer("target_mean", torch.tensor(float(mean)))
            self.register_buffer("target_std", torch.tensor(float(std)))
        # The strategy config; configure_model hands it to parallel.py (None: nothing to apply).
        self.parallel_cfg, self.num_nodes = parallel, num_nodes
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
        # (optimizer step, synced training loss) of each logging step, as tensors (no sync).
        self.step_losses: list[tuple[int, torch.Tensor]] = []
        self.label_smoothing, self.log_grad_norm = label_smoothing, log_grad_norm
        # Set by build.py to the non-finite loss policy: gate(module, loss) -> False skips the batch.
        self.loss_gate: Any = None
        self.batch_in_epoch = 0  # the training batch's index in its epoch, for the policy's report
        self.resumed = 0  # how many times this run was resumed (results.json)
        self.preprocessing: dict | None = None  # set by runs/train.py, saved in checkpoints
        # Token-level losses are summed per micro-batch and divided by the step's token count.
        self.token_mean = StepTokenMean()
        # Optimizer steps the schedule spans (set in configure_optimizers).
        self.total_steps: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    # ------------------------------------------------------------------ loss and probabilities

    def predictions(self, logits: torch.Tensor) -> torch.Tensor:
        """What the model predicts, from its raw outputs: P(class 1) of shape (N,) for binary,
        class probabilities (N, C) for multiclass, values in the target's units for regression."""
        logits = logits.detach().float()
        if self.task == "regression":
            return logits.squeeze(-1) * self.target_std + self.target_mean
        if self.task == "binary":
            return torch.sigmoid(logits.squeeze(-1))
        return torch.softmax(logits, dim=-1)  # ctc: (N, tokens, labels), one distribution per token

    def loss_and_probs(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Label smoothing regularises the training loss only; evaluation losses stay comparable.
        eps = self.label_smoothing if self.training else 0.0
        if self.task == "regression":
            # MSE of the standardised target.
            loss = F.mse_loss(logits.squeeze(-1).float(), (y.float() - self.target_mean) / self.target_std)
        elif self.task == "binary":
            squeezed = logits.squeeze(-1)
            target = y.to(squeezed.dtype) * (1.0 - eps) + 0.5 * eps  # two classes: e/2 each
            loss = F.binary_cross_entropy_with_logits(squeezed, target)
        else:
            loss = F.cross_entropy(logits, y, label_smoothing=eps)
        return loss, self.predictions(logits)

    def _lm_step(self, batch: tuple[torch.Tensor], stage: str) -> torch.Tensor | None:
        """Next-token cross-entropy averaged over every token of the micro-batch. Micro-batches
        hold the same number of tokens, so the mean over micro-batches and devices is exact."""
        (windows,) = batch
        x, y = windows[:, :-1].long(), windows[:, 1:].long()
        logits = self(x)
        eps = self.label_smoothing if self.training else 0.0
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), label_smoothing=eps)
        if stage == "fit" and self.loss_gate is not None and not self.loss_gate(self, loss):
            return None  # a non-finite loss the policy skips
        self.stage_loss[stage].update(loss.detach(), weight=y.numel())
        if stage in self.stage_metrics:
            self.stage_metrics[stage].update(logits.detach().argmax(-1).flatten(), y.flatten())
        return loss

    def _ctc_step(self, batch: tuple[torch.Tensor, ...], stage: str) -> torch.Tensor | None:
        """CTC loss of transcripts (labels padded with 0, the blank; their lengths): every
        token of the clip is an input frame. torch's mean divides each clip's loss by its
        transcript length, then averages over the micro-batch; a clip too short for its
        transcript adds 0 (zero_infinity) rather than an infinite loss."""
        x, labels, lengths = batch
        logits = self(x)
        log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (tokens, N, labels)
        frames = torch.full((len(lengths),), log_probs.shape[0], dtype=torch.long, device=log_probs.device)
        loss = F.ctc_loss(log_probs, labels, frames, lengths, blank=0, zero_infinity=True)
        if stage == "fit" and self.loss_gate is not None and not self.loss_gate(self, loss):
            return None
        self.stage_loss[stage].update(loss.detach(), weight=len(lengths))
        if stage in self.stage_metrics:
            said = [label_text(p) for p in ctc_greedy(logits.detach())]
            truth = [label_text(row[:n].tolist()) for row, n in zip(labels.cpu(), lengths.cpu(), strict=True)]
            self.stage_metrics[stage].update(said, truth)
        return loss

    def _shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor | None:
        if self.task == "lm":
            return self._lm_step(batch, stage)
        if self.task == "ctc":
            return self._ctc_step(batch, stage)
        x, y = batch
        loss, probs = self.loss_and_probs(self(x), y)
        if stage == "fit" and self.loss_gate is not None and not self.loss_gate(self, loss):
            return None  # a non-finite loss the policy skips: no backward, no metric update
        self.stage_loss[stage].update(loss.detach(), weight=y.numel())
        if stage in self.stage_metrics:
            self.stage_metrics[stage].update(probs, y)
        if stage == "test" and self.task == "regression":
            self.curves["predicted"].update(probs)
            self.curves["true"].update(y.float())
        elif stage == "test":
            self.curves.update(probs, y)
        return loss

    # ------------------------------------------------------------------ Lightning hooks

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        self.batch_in_epoch = batch_idx
        loss = self._shared_step(batch, "fit")
        if loss is None:
            return None  # Lightning skips the backward and the update of this batch
        # Only on the steps the loggers write: each self.log call costs Lightning about 1 ms
        # (it deep-copies the value's metadata), several times a small model's step.
        if self.logs_this_step():
            # Synced: the mean of the ranks' micro-batch losses is the loss of the global batch,
            # the same number on 1 or N processes (what the parallel equivalence tests compare).
            value = loss.detach()
            if self.trainer.world_size > 1:
                value = self.trainer.strategy.reduce(value, reduce_op="mean")
            self.log("train/loss", value, on_step=True, on_epoch=False, prog_bar=True)
            if self.task == "lm":  # for the loss-by-step plot
                self.step_losses.append((self.global_step + 1, value))
        return loss

    def logs_this_step(self) -> bool:
        """Whether the loggers write this optimizer step: the same rule as Lightning's own
        (every `log_every_n_steps` optimizer steps, counted from one), from public counters."""
        return (self.trainer.global_step + 1) % self.trainer.log_every_n_steps == 0

    def validation_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def _log_epoch(self, stage: str) -> None:
        if not self.stage_loss[stage].update_called:
            # An epoch without batches (a resume from the end of an epoch, or a skipped stage):
            # nothing to log, and AUROC and friends cannot be computed from no samples.
            return
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
        if self.task in ("lm", "ctc"):
            return
        curves = self.curves.compute()
        self.curves.reset()
        if self.task == "regression":
            self.test_artifacts = {"predicted": _to_cpu(curves["predicted"]), "true": _to_cpu(curves["true"])}
            return
        fpr, tpr, _ = curves["roc"]
        self.test_artifacts = {
            "confusion_matrix": curves["confusion_matrix"].cpu(),
            "roc": (_to_cpu(fpr), _to_cpu(tpr)),
        }

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Gradients are complete (and unscaled) here, before Lightning clips them."""
        if self.token_mean.pending:
            self.token_mean.normalize_grads(
                self.parameters(),
                self.trainer.accumulate_grad_batches,
                self.trainer.world_size,
                lambda t: self.trainer.strategy.reduce(t, reduce_op="sum"),
            )
        # The norm costs a pass over every gradient, so only on the steps the loggers write.
        if self.log_grad_norm and self.logs_this_step():
            norm = _grad_norm(self.model.parameters())
            if norm is not None:
                self.log("train/grad_norm", norm, on_step=True, on_epoch=False)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Lightning's clipping, except where gradients live on different device meshes (tensor
        parallel leaves norms and embeddings as plain tensors beside sharded DTensors; fsdp_tp
        puts them on a 2-D mesh): torch's clip_grad_norm_ cannot take the norm of such a mix, so
        the global norm is taken parameter by parameter and every gradient scaled by one factor."""
        if (
            gradient_clip_val is None
            or gradient_clip_algorithm != "norm"
            or not _mixed_meshes(self.parameters())
        ):
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        norm = _grad_norm(self.parameters())
        if norm is None:
            return
        scale = min(1.0, gradient_clip_val / (float(norm) + 1e-6))  # torch's own epsilon
        if scale < 1.0:
            for p in self.parameters():
                if p.grad is not None:
                    p.grad.mul_(scale)

    # ------------------------------------------------------------------ resuming

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A resumed run must draw the same dropout masks as one that never stopped, and end like
        # it: the per-epoch history (results.json's `val` is the history row of the best
        # checkpoint, which may predate the resume) and the resume count, as plain values so
        # that checkpoints still load with torch.load(weights_only=True).
        checkpoint["bigtrain_rng"] = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["bigtrain_rng"]["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint[RUN_STATE_KEY] = {"resumed": self.resumed, "history": list(self.history)}
        if self.preprocessing is not None:
            checkpoint[PREPROCESSING_KEY] = self.preprocessing

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Testing the best checkpoint loads it too: only a fit that starts from a checkpoint is
        # a resume, and only then does the history of the run before it come back.
        state: dict[str, Any] = checkpoint.get(RUN_STATE_KEY, {})
        if self.fitting():
            self.resumed = int(state.get("resumed", 0)) + 1
            self.history = [dict(row) for row in state.get("history", [])]
        rng = checkpoint.get("bigtrain_rng")
        if rng is not None:
            torch.set_rng_state(rng["cpu"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])

    def fitting(self) -> bool:
        """True while a Trainer fits this module (not testing it, not loaded outside a Trainer)."""
        try:
            return self.trainer.state.fn == TrainerFn.FITTING
        except RuntimeError:  # not attached to a Trainer
            return False

    def configure_model(self) -> None:
        """Lightning calls this on every rank before the optimizer exists (and again for test):
        parallel.py shards the model once over `self.device_mesh`, and metrics sync over the
        data-parallel group so that tensor-parallel copies of a batch count once."""
        if self.parallel_cfg is None or getattr(self, "_parallelized", False):
            return
        from bigtrain.distributed.parallel import data_parallel_group, parallelize

        # The strategy's device: the module itself may still sit on the CPU at this point.
        device = self.trainer.strategy.root_device
        parallelize(
            self.model,
            self.parallel_cfg,
            self.device_mesh,
            device,
            self.num_nodes,
            str(self.trainer.precision),
        )
        group = data_parallel_group(self.device_mesh)
        if group is not None:
            for m in self.modules():
                if isinstance(m, torchmetrics.Metric):
                    m.process_group = group
        self._parallelized = True

    def configure_optimizers(self):
        trainer = self.trainer
        scaled = str(trainer.precision) == "16-mixed"  # a gradient scaler unscales before each step
        optimizer = build_optimizer(self.optim_cfg, self.model, scaled)
        steps = max(1, int(trainer.estimated_stepping_batches))
        self.total_steps = steps
        total = max(1, int(trainer.max_epochs)) if self.sched_cfg.interval == "epoch" else steps
        sched = build_scheduler(self.sched_cfg, optimizer, total, trainer.check_val_every_n_epoch)
        return {"optimizer": optimizer, "lr_scheduler": sched}


def _mixed_meshes(params) -> bool:
    """Whether the gradients are not all on one device mesh (plain tensors count as none)."""
    meshes = {_mesh_key(getattr(p.grad, "device_mesh", None)) for p in params if p.grad is not None}
    return len(meshes) > 1


def _mesh_key(mesh: Any) -> tuple | None:
    return None if mesh is None else (mesh.mesh_dim_names, tuple(mesh.mesh.flatten().tolist()))


def _grad_norm(params) -> torch.Tensor | None:
    """The L2 norm of all gradients. Sharded gradients (DTensors under fsdp/tp) contribute their
    global norm, so the value is the same on 1 or N processes and whatever the sharding."""
    norms = []
    for p in params:
        if p.grad is None:
            continue
        if hasattr(p.grad, "full_tensor"):  # a DTensor: reduce the shards' partial norms
            norms.append(p.grad.detach().norm(2).full_tensor().float())
        else:  # linalg directly: Tensor.norm's Python dispatch costs more than the norm here
            norms.append(torch.linalg.vector_norm(p.grad.detach(), dtype=torch.float32))
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else None


def _to_cpu(value):
    if isinstance(value, (list, tuple)):
        return [v.cpu() for v in value]
    return value.cpu()
