"""Wires a validated RunConfig into the module, callbacks and Trainer: the only place that
connects pieces (runs/train.py runs them)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from bigtrain.callbacks.meter import Meter
from bigtrain.callbacks.nan_policy import NonFinitePolicy
from bigtrain.callbacks.requeue import RequeueOnSignal
from bigtrain.callbacks.samples import Samples
from bigtrain.cluster.slurm import in_slurm_job
from bigtrain.config import RunConfig, as_dict
from bigtrain.config.secrets import strip_secrets
from bigtrain.distributed.strategy import build_plugins, build_strategy
from bigtrain.models import build_model, family
from bigtrain.training.checkpoint_files import checkpoint_folder, shown
from bigtrain.training.module import BigtrainModule


def build_module(cfg: RunConfig, spec, bytes_per_token: float = 1.0) -> BigtrainModule:
    """The one LightningModule around the configured model."""
    model = build_model(cfg.model, spec.input_shape, spec.num_outputs)
    if getattr(cfg.model, "init_from", None) is not None:  # Hugging Face weights (models/hf.py)
        from pytorch_lightning.utilities import rank_zero_only

        from bigtrain.models.hf import continues_checkpoint, load_into

        if not continues_checkpoint(cfg):  # a checkpoint's weights would replace them
            line = load_into(model, cfg.model.init_from)
            if rank_zero_only.rank == 0:
                print(line, flush=True)
    return BigtrainModule(
        model,
        task=spec.task,
        num_classes=spec.num_classes,
        optim=cfg.optim,
        sched=cfg.sched,
        metric_names=list(cfg.metrics.names),
        train_metrics=cfg.metrics.train,
        # Logged to every logger (and saved in checkpoints): never with secret-looking keys.
        hparams=strip_secrets(as_dict(cfg)),
        label_smoothing=cfg.tricks.label_smoothing,
        log_grad_norm=cfg.tricks.log_grad_norm,
        parallel=cfg.strategy,
        num_nodes=cfg.trainer.num_nodes,
        bytes_per_token=bytes_per_token,
        target_stats=spec.target_stats,
    )


@dataclass
class RunCallbacks:
    """The callbacks of a run (and the non-finite policy, which needs no hook), held by
    reference: train() reads their summaries by name."""

    meter: Meter
    nonfinite: NonFinitePolicy
    requeue: RequeueOnSignal | None = None
    samples: Samples | None = None
    ema: pl.Callback | None = None
    swa: pl.Callback | None = None
    others: list[pl.Callback] = field(default_factory=list)

    @property
    def all(self) -> list[pl.Callback]:
        optional = [self.requeue, self.samples, self.ema, self.swa]
        # The meter first: it counts the data's processed batches (TrainBatches) before any
        # callback saves a checkpoint at the same batch end.
        return [self.meter, *self.others, *(c for c in optional if c is not None)]


def build_callbacks(
    cfg: RunConfig, run_dir: Path, module: BigtrainModule, plan: dict | None = None
) -> RunCallbacks:
    """The run's callbacks; the non-finite policy is attached to `module`."""
    c, n = cfg.callbacks, cfg.tricks.nonfinite
    ckpt_dir = checkpoint_folder(cfg.checkpoint_dir, run_dir)
    run = RunCallbacks(
        meter=Meter(
            warmup=c.throughput.warmup,
            tokens_per_sample=(plan or {}).get("batch", {}).get("seq_len"),
            flops_per_token=(plan or {}).get("flops_per_token"),
            peak_flops=c.throughput.peak_flops,
            precision=cfg.trainer.precision,
            memory_every=cfg.trainer.log_every_n_steps,
        ),
        nonfinite=NonFinitePolicy(n.policy, n.max_consecutive, ckpt_dir, shown(ckpt_dir, run_dir)),
        others=lightning_callbacks(cfg, run_dir),
    )
    run.nonfinite.attach(module)
    if family(cfg.model.family).language_model and c.samples.enabled:
        run.samples = Samples(c.samples, context=min(cfg.model.max_seq_len, cfg.data.seq_len))
    if in_slurm_job():
        run.requeue = RequeueOnSignal(run_dir)
    run.ema, run.swa = weight_averaging(cfg)
    return run


def lightning_callbacks(cfg: RunConfig, run_dir: Path) -> list[pl.Callback]:
    """Lightning's own callbacks as the config sets them: checkpoints, early stopping, learning
    rates, progress bar, model summary, plots."""
    from pytorch_lightning import callbacks as cb

    from bigtrain.callbacks.checkpoints import checkpoint_callbacks
    from bigtrain.callbacks.plots import Plots

    c = cfg.callbacks
    out: list[pl.Callback] = checkpoint_callbacks(
        c.checkpoint, checkpoint_folder(cfg.checkpoint_dir, run_dir)
    )
    if c.early_stopping.enabled:
        es = c.early_stopping
        out.append(
            cb.EarlyStopping(
                monitor=c.checkpoint.monitor,
                mode=c.checkpoint.mode,
                patience=es.patience,
                min_delta=es.min_delta,
            )
        )
    has_logger = any(getattr(cfg.logger, k) is not None for k in ("csv", "tensorboard", "mlflow", "wandb"))
    if c.lr_monitor and has_logger:
        out.append(cb.LearningRateMonitor(logging_interval="step"))
    if c.plots:
        out.append(Plots(run_dir / "plots"))
    if cfg.trainer.enable_progress_bar and c.progress_bar == "rich":
        # Redrawn every `refresh_rate` batches; Lightning turns it off on ranks other than zero.
        # In a terminal each epoch's bar stays; in a log file only the running one is drawn.
        out.append(cb.RichProgressBar(refresh_rate=c.progress_refresh_rate, leave=sys.stdout.isatty()))
    elif cfg.trainer.enable_progress_bar and c.progress_bar == "tqdm":
        out.append(cb.TQDMProgressBar(refresh_rate=c.progress_refresh_rate))
    if c.model_summary_depth > 0:
        from bigtrain.callbacks.summary import ModelSummary

        out.append(ModelSummary(max_depth=c.model_summary_depth))
    return out + extra_callbacks(cfg)


def extra_callbacks(cfg: RunConfig) -> list[pl.Callback]:
    """The user's own Lightning callbacks (`callbacks.extra: [{_target_: pkg.Class, ...}]`)."""
    if not cfg.callbacks.extra:
        return []
    from hydra.utils import instantiate

    return [instantiate(spec) for spec in cfg.callbacks.extra]


def weight_averaging(cfg: RunConfig) -> tuple[pl.Callback | None, pl.Callback | None]:
    """(EMA, SWA) callbacks as tricks.ema and tricks.swa ask; at most one of them is set."""
    k = cfg.tricks
    ema = swa = None
    if k.ema.enabled:
        from bigtrain.callbacks.ema import EMA

        # Lightning's weight averaging copies the whole model: it warns when the strategy shards it.
        sharded = cfg.strategy.name in ("fsdp", "tp", "fsdp_tp", "deepspeed_zero3")
        ema = EMA(k.ema.decay, k.ema.start_step, warn_on_configure_model=sharded)
    if k.swa.enabled:
        from pytorch_lightning.callbacks import StochasticWeightAveraging

        start = k.swa.epoch_start
        swa = StochasticWeightAveraging(
            swa_lrs=k.swa.lr,
            swa_epoch_start=start if start < 1 else int(start),
            annealing_epochs=k.swa.annealing_epochs,
            annealing_strategy=k.swa.annealing_strategy,
        )
    return ema, swa


def trick_results(cfg: RunConfig, callbacks: RunCallbacks) -> dict:
    """results.json blocks of the tricks: precision, nonfinite, ema, swa."""
    out: dict[str, Any] = {
        "precision": callbacks.meter.precision_summary(),
        "nonfinite": callbacks.nonfinite.summary(),
    }
    if callbacks.ema is not None:
        out["ema"] = callbacks.ema.summary()
    if callbacks.swa is not None:
        n = callbacks.swa.n_averaged
        out["swa"] = {
            "models_averaged": int(n) if n is not None else 0,
            "epoch_start": cfg.tricks.swa.epoch_start,
        }
    return out


def epochs_for_steps(cfg: RunConfig, dm: Any) -> int | None:
    """For a run limited by steps only (max_epochs=-1): the epochs those steps take, so that the
    progress bar says 'Epoch 3/9' rather than 'Epoch 3/-2'; training still ends at max_steps.
    None where the epoch's length is not known before fit (or the run is limited by epochs)."""
    t = cfg.trainer
    if t.max_epochs != -1 or t.max_steps <= 0 or isinstance(t.limit_train_batches, float):
        return None
    try:
        batches = len(dm.train_dataloader())
    except (TypeError, AttributeError, RuntimeError):
        return None
    if isinstance(t.limit_train_batches, int):
        batches = min(batches, t.limit_train_batches)
    steps = batches // t.accumulate_grad_batches
    return -(-t.max_steps // steps) if steps > 0 else None


def lightning_precision(setting: str) -> str:
    """Lightning's name for a trainer.precision setting ("32" is "32-true")."""
    return "32-true" if setting == "32" else setting


def build_trainer(
    cfg: RunConfig, run_dir: Path, callbacks: list, loggers: list, max_epochs: int | None = None
) -> pl.Trainer:
    """Lightning's Trainer for the run; `max_epochs` replaces trainer.max_epochs when given."""
    from bigtrain.training.checkpoint_io import AtomicCheckpointIO

    t = cfg.trainer
    progress = t.enable_progress_bar and cfg.callbacks.progress_bar != "none"
    precision = lightning_precision(t.precision)
    return pl.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=build_strategy(cfg),
        precision=precision,
        max_epochs=max_epochs if max_epochs is not None else t.max_epochs,
        max_steps=t.max_steps,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=t.gradient_clip_val,
        gradient_clip_algorithm=t.gradient_clip_algorithm,
        log_every_n_steps=t.log_every_n_steps,
        val_check_interval=t.val_check_interval,
        check_val_every_n_epoch=t.check_val_every_n_epoch,
        limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches,
        limit_test_batches=t.limit_test_batches,
        deterministic=t.deterministic,
        enable_progress_bar=progress,
        enable_model_summary=False,  # RichModelSummary above, when model_summary_depth > 0
        callbacks=callbacks,
        logger=loggers or False,
        default_root_dir=str(run_dir),
        plugins=[AtomicCheckpointIO(trust=cfg.trust_checkpoint), *build_plugins()],
        **t.lightning,  # +trainer.NAME=value: Trainer arguments bigtrain does not list
    )
