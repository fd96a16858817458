"""Wires a validated RunConfig into data, model, module, callbacks, loggers and a Trainer, and runs
fit -> test (best checkpoint) -> results.json. The only place that connects pieces."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only

from bigtrain.config import RunConfig, as_dict
from bigtrain.data import build_datamodule, data_spec
from bigtrain.models import build_model
from bigtrain.module import BigtrainModule
from bigtrain.plan import make_plan, print_plan
from bigtrain.results import RESULTS_FILE, empty_results, print_summary, strip_stage, write_json_atomic


def build_module(cfg: RunConfig, spec, bytes_per_token: float = 1.0) -> BigtrainModule:
    model = build_model(cfg.model, spec.input_shape, spec.num_outputs)
    return BigtrainModule(
        model,
        task=spec.task,
        num_classes=spec.num_classes,
        optim=cfg.optim,
        sched=cfg.sched,
        metric_names=list(cfg.metrics.names),
        train_metrics=cfg.metrics.train,
        hparams=as_dict(cfg),
        bytes_per_token=bytes_per_token,
    )


def build_callbacks(cfg: RunConfig, run_dir: Path, plan: dict | None = None) -> list[pl.Callback]:
    from pytorch_lightning import callbacks as cb

    from bigtrain.callbacks.plots import Plots
    from bigtrain.callbacks.throughput import Throughput

    c = cfg.callbacks
    out: list[pl.Callback] = [
        cb.ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="epoch{epoch:03d}-step{step:06d}",
            auto_insert_metric_name=False,
            monitor=c.checkpoint.monitor,
            mode=c.checkpoint.mode,
            save_last=c.checkpoint.save_last,
            save_top_k=c.checkpoint.save_top_k,
        ),
        Throughput(
            warmup=c.throughput.warmup,
            tokens_per_sample=(plan or {}).get("batch", {}).get("seq_len"),
            flops_per_token=(plan or {}).get("flops_per_token"),
            peak_flops=c.throughput.peak_flops,
            precision=cfg.trainer.precision,
        ),
    ]
    if cfg.model.family == "transformer" and c.samples.enabled:
        from bigtrain.callbacks.samples import Samples

        out.append(Samples(c.samples, context=min(cfg.model.max_seq_len, cfg.data.seq_len)))
    if c.early_stopping.enabled:
        out.append(
            cb.EarlyStopping(
                monitor=c.checkpoint.monitor,
                mode=c.checkpoint.mode,
                patience=c.early_stopping.patience,
                min_delta=c.early_stopping.min_delta,
            )
        )
    has_logger = cfg.logger.csv is not None or cfg.logger.tensorboard is not None
    if c.lr_monitor and has_logger:
        out.append(cb.LearningRateMonitor(logging_interval="step"))
    if c.plots:
        out.append(Plots(run_dir / "plots"))
    if c.progress_bar == "rich" and cfg.trainer.enable_progress_bar:
        out.append(cb.RichProgressBar(leave=True))
    elif c.progress_bar == "tqdm" and cfg.trainer.enable_progress_bar:
        out.append(cb.TQDMProgressBar())
    if c.model_summary_depth > 0:
        out.append(cb.RichModelSummary(max_depth=c.model_summary_depth))
    return out


def build_loggers(cfg: RunConfig, run_dir: Path) -> list:
    import warnings

    from pytorch_lightning import loggers

    # The run directory already holds plan.json and .hydra/ when the CSV logger starts; it only
    # ever writes metrics.csv and hparams.yaml there, so its "not empty" warning is noise.
    warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")

    out = []
    if cfg.logger.csv is not None:
        # name="" and version="" put metrics.csv and hparams.yaml directly in the run directory.
        out.append(
            loggers.CSVLogger(
                save_dir=str(run_dir),
                name="",
                version="",
                flush_logs_every_n_steps=cfg.logger.csv.flush_logs_every_n_steps,
            )
        )
    if cfg.logger.tensorboard is not None:
        out.append(
            loggers.TensorBoardLogger(
                save_dir=str(run_dir),
                name="tensorboard",
                version="",
                default_hp_metric=False,
                log_graph=cfg.logger.tensorboard.log_graph,
            )
        )
    return out


def build_strategy(cfg: RunConfig) -> Any:
    if cfg.strategy.name == "ddp":
        from pytorch_lightning.strategies import DDPStrategy

        return DDPStrategy(find_unused_parameters=cfg.strategy.find_unused_parameters)
    return "auto"


def build_trainer(cfg: RunConfig, run_dir: Path, callbacks: list, loggers: list) -> pl.Trainer:
    t = cfg.trainer
    progress = t.enable_progress_bar and cfg.callbacks.progress_bar != "none"
    precision = "32-true" if t.precision == "32" else t.precision
    return pl.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=build_strategy(cfg),
        precision=precision,
        max_epochs=t.max_epochs,
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
    )


@rank_zero_only
def _print_data(dm) -> None:
    from rich.console import Console

    if hasattr(dm, "describe"):
        Console().print(dm.describe(), markup=False)
        return
    sizes, balance = dm.sizes(), dm.class_balance()
    parts = ", ".join(f"{k} {sizes[k]} (classes {balance[k]})" for k in sizes)
    Console().print(f"data: {dm.cfg.name}: {parts}")


def _best_val(module: BigtrainModule, ckpt_cb, monitor: str) -> dict:
    """The validation metrics of the epoch whose checkpoint is the best one."""
    best = ckpt_cb.best_model_score if ckpt_cb is not None else None
    rows = [h for h in module.history if monitor in h]
    if best is not None:
        match = [h for h in rows if h[monitor] == float(best)]
        rows = match or rows
    return strip_stage(rows[-1], "val") if rows else {}


def train(cfg: RunConfig, run_dir: str | Path) -> dict:
    """Plan, fit, test the best checkpoint, and write results.json in `run_dir`. Returns the results."""
    start = time.perf_counter()
    run_dir = Path(run_dir)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    spec = data_spec(cfg)
    plan = make_plan(cfg, spec)
    if rank_zero_only.rank == 0:
        print_plan(plan)
        write_json_atomic(run_dir / "plan.json", plan)
    if cfg.dry_run:
        return {"status": "planned", "plan": plan}

    results = empty_results(cfg.name)
    results["params"] = plan["params"]["total"]
    dm = build_datamodule(cfg)
    dm.setup("fit")
    _print_data(dm)
    stats = getattr(dm, "stats", {})
    if stats:
        results["data"] = stats
    module = build_module(cfg, spec, stats.get("bytes_per_token", 1.0))
    callbacks = build_callbacks(cfg, run_dir, plan)
    trainer = build_trainer(cfg, run_dir, callbacks, build_loggers(cfg, run_dir))
    ckpt_cb = trainer.checkpoint_callback
    throughput = next(c for c in callbacks if type(c).__name__ == "Throughput")
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=cfg.ckpt_path)
        if cfg.test_after_fit:
            best = ckpt_cb.best_model_path if ckpt_cb is not None and ckpt_cb.best_model_path else None
            tested = trainer.test(module, datamodule=dm, ckpt_path=best, verbose=False)
            results["test"] = strip_stage(tested[0] if tested else {}, "test")
            if module.test_artifacts:
                results["confusion_matrix"] = module.test_artifacts["confusion_matrix"].tolist()
        results["status"] = "interrupted" if trainer.interrupted else "completed"
    except (KeyboardInterrupt, SystemExit):
        results["status"] = "interrupted"
        raise
    except BaseException as e:
        results["status"] = "failed"
        results["error"] = f"{type(e).__name__}: {e}"
        raise
    finally:
        results["global_step"] = trainer.global_step
        results["epochs"] = trainer.current_epoch
        results["val"] = _best_val(module, ckpt_cb, cfg.callbacks.checkpoint.monitor)
        if ckpt_cb is not None and ckpt_cb.best_model_path:
            results["best_checkpoint"] = os.path.relpath(ckpt_cb.best_model_path, run_dir)
        results["throughput"] = throughput.summary()
        samples = next((c for c in callbacks if type(c).__name__ == "Samples"), None)
        if samples is not None:
            results["samples"] = samples.last
        results["wall_seconds"] = round(time.perf_counter() - start, 3)
        if trainer.is_global_zero:
            write_json_atomic(run_dir / RESULTS_FILE, results)
    if trainer.is_global_zero:
        print_summary(results, run_dir)
    return results
