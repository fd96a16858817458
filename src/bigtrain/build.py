"""Wires a validated RunConfig into data, model, module, callbacks, loggers and a Trainer, and runs
fit -> test (best checkpoint) -> results.json. The only place that connects pieces."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only

from bigtrain.config import RunConfig, as_dict, steps_per_call, strip_secrets, tensor_parallel_size
from bigtrain.data import build_datamodule
from bigtrain.models import build_model
from bigtrain.module import BigtrainModule
from bigtrain.plan import run_plan
from bigtrain.results import (
    RESULTS_FILE,
    empty_results,
    print_summary,
    strip_stage,
    write_json_atomic,
)
from bigtrain.slurm import in_slurm_job, job_id, newest_hpc_checkpoint, requeue


def build_module(cfg: RunConfig, spec, bytes_per_token: float = 1.0) -> BigtrainModule:
    """The module; with trainer.steps_per_call > 1 it runs that many optimizer steps per batch
    (the data module built by build_datamodule hands out as many micro-batches per batch)."""
    model = build_model(cfg.model, spec.input_shape, spec.num_outputs)
    module = BigtrainModule(
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
    )
    if (fused := steps_per_call(cfg)) > 1:
        import warnings

        # Lightning compares its batch count with log_every_n_steps; the module logs every step.
        warnings.filterwarnings("ignore", message="The number of training batches .* logging interval")
        t = cfg.trainer
        module.fuse_steps(fused, cfg.data.batch_size, (t.gradient_clip_val, t.gradient_clip_algorithm))
    return module


def build_callbacks(cfg: RunConfig, run_dir: Path, plan: dict | None = None) -> list[pl.Callback]:
    from pytorch_lightning import callbacks as cb

    from bigtrain.callbacks.memory import MemoryWatch
    from bigtrain.callbacks.plots import Plots
    from bigtrain.callbacks.progress import ThrottledRichProgressBar
    from bigtrain.callbacks.requeue import RequeueOnSignal
    from bigtrain.callbacks.resume_state import ResumeState
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
        ResumeState(),
        MemoryWatch(every=cfg.trainer.log_every_n_steps),
    ]
    if cfg.model.family == "transformer" and c.samples.enabled:
        from bigtrain.callbacks.samples import Samples

        out.append(Samples(c.samples, context=min(cfg.model.max_seq_len, cfg.data.seq_len)))
    if c.checkpoint.every_n_train_steps:
        # Mid-epoch checkpoints for resume; the latest one is kept (monitor=None, top 1).
        out.append(
            cb.ModelCheckpoint(
                dirpath=run_dir / "checkpoints",
                filename="step{step:06d}",
                auto_insert_metric_name=False,
                every_n_train_steps=c.checkpoint.every_n_train_steps,
                save_top_k=1,
            )
        )
    if c.early_stopping.enabled:
        out.append(
            cb.EarlyStopping(
                monitor=c.checkpoint.monitor,
                mode=c.checkpoint.mode,
                patience=c.early_stopping.patience,
                min_delta=c.early_stopping.min_delta,
            )
        )
    has_logger = any(
        getattr(cfg.logger, name) is not None for name in ("csv", "tensorboard", "mlflow", "wandb")
    )
    if c.lr_monitor and has_logger:
        monitor = cb.LearningRateMonitor(logging_interval="step")
        if steps_per_call(cfg) > 1:
            monitor.on_train_batch_start = None  # the module logs the rates of every fused step
        out.append(monitor)
    if c.plots:
        out.append(Plots(run_dir / "plots"))
    if c.progress_bar == "rich" and cfg.trainer.enable_progress_bar:
        out.append(ThrottledRichProgressBar(leave=True))
    elif c.progress_bar == "tqdm" and cfg.trainer.enable_progress_bar:
        out.append(cb.TQDMProgressBar())
    if c.model_summary_depth > 0:
        out.append(cb.RichModelSummary(max_depth=c.model_summary_depth))
    if in_slurm_job():
        out.append(RequeueOnSignal(run_dir))
    return skip_noop_batch_hooks(out + build_trick_callbacks(cfg, run_dir))


# Hooks Lightning calls on every callback for every batch (most of them several times a step).
BATCH_HOOKS = (
    "on_train_batch_start",
    "on_train_batch_end",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_predict_batch_start",
    "on_predict_batch_end",
)


def skip_noop_batch_hooks(callbacks: list[pl.Callback]) -> list[pl.Callback]:
    """Lightning calls each per-batch hook of every callback, inside a profiler context, even
    where the callback only inherits Callback's empty method: with ten callbacks that is 60
    calls per step, 0.1-0.3 ms on a CPU, several percent of a small model's step. It calls only
    what is callable, so an inherited no-op is set to None on the instance; hooks a callback
    implements are untouched."""
    for callback in callbacks:
        for hook in BATCH_HOOKS:
            if getattr(type(callback), hook) is getattr(pl.Callback, hook):
                setattr(callback, hook, None)
    return callbacks


def build_trick_callbacks(cfg: RunConfig, run_dir: Path) -> list[pl.Callback]:
    """Weight averaging, the non-finite loss policy and the precision probe (tricks.*)."""
    from bigtrain.callbacks.nan_policy import NonFinitePolicy
    from bigtrain.callbacks.precision import PrecisionProbe

    k = cfg.tricks
    n = k.nonfinite
    out: list[pl.Callback] = [
        NonFinitePolicy(n.policy, n.max_consecutive, list(n.inject_at_steps), run_dir / "checkpoints"),
        PrecisionProbe(cfg.trainer.precision),
    ]
    if k.ema.enabled:
        from bigtrain.callbacks.ema import EMA

        out.append(EMA(k.ema.decay, k.ema.start_step))
    if k.swa.enabled:
        from pytorch_lightning.callbacks import StochasticWeightAveraging

        start = k.swa.epoch_start
        out.append(
            StochasticWeightAveraging(
                swa_lrs=k.swa.lr,
                swa_epoch_start=start if start < 1 else int(start),
                annealing_epochs=k.swa.annealing_epochs,
                annealing_strategy=k.swa.annealing_strategy,
            )
        )
    return out


def _find(callbacks: list, name: str) -> Any:
    return next((c for c in callbacks if type(c).__name__ == name), None)


def _trick_results(cfg: RunConfig, callbacks: list) -> dict:
    """results.json blocks of the tricks: precision, nonfinite, ema, swa."""
    out: dict[str, Any] = {}
    for name, key in (("PrecisionProbe", "precision"), ("NonFinitePolicy", "nonfinite"), ("EMA", "ema")):
        if (c := _find(callbacks, name)) is not None:
            out[key] = c.summary()
    if (swa := _find(callbacks, "StochasticWeightAveraging")) is not None:
        n = swa.n_averaged
        out["swa"] = {"models_averaged": int(n) if n is not None else 0, "epoch_start": swa._swa_epoch_start}
    return out


def build_loggers(cfg: RunConfig, run_dir: Path, resuming: bool = False) -> list:
    """CSV and TensorBoard loggers writing straight into the run directory (version ''), so a
    resumed run keeps its logger version: the same metrics.csv and TensorBoard folder."""
    import warnings

    from pytorch_lightning import loggers

    # The run directory already holds plan.json and .hydra/ when the CSV logger starts; it only
    # ever writes metrics.csv and hparams.yaml there, so its "not empty" warning is noise.
    warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")

    out = []
    if cfg.logger.csv is not None:
        # name="" and version="" put metrics.csv and hparams.yaml directly in the run directory.
        from bigtrain.csv_append import AppendingCSVLogger

        # A resumed run appends to its metrics.csv (Lightning's own logger would delete it).
        csv_logger = AppendingCSVLogger if resuming else loggers.CSVLogger
        out.append(
            csv_logger(
                save_dir=str(run_dir),
                name="",
                version="",
                flush_logs_every_n_steps=cfg.logger.csv.flush_logs_every_n_steps,
            )
        )
    if cfg.logger.tensorboard is not None:
        from bigtrain.tensorboard import OneEventTensorBoardLogger

        out.append(
            OneEventTensorBoardLogger(
                save_dir=str(run_dir),
                name="tensorboard",
                version="",
                default_hp_metric=False,
                log_graph=cfg.logger.tensorboard.log_graph,
            )
        )
    if cfg.logger.mlflow is not None:
        out.append(_mlflow_logger(cfg, run_dir))
    if cfg.logger.wandb is not None:
        out.append(_wandb_logger(cfg, run_dir))
    return out


def _mlflow_logger(cfg: RunConfig, run_dir: Path):
    from pytorch_lightning.loggers import MLFlowLogger

    m = cfg.logger.mlflow
    uri = m.tracking_uri
    if uri is None:
        # A file store inside the run directory: no server or database needed. MLflow 3 keeps the
        # file store working but refuses it unless this variable opts in (a database store would
        # need SQLAlchemy, which the light mlflow-skinny client does not bring).
        uri = (run_dir / "mlruns").resolve().as_uri()
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MLFlowLogger(
        experiment_name=m.experiment_name or cfg.name,
        run_name=m.run_name or run_dir.name,
        tracking_uri=uri,
    )


def _wandb_logger(cfg: RunConfig, run_dir: Path):
    from pytorch_lightning.loggers import WandbLogger

    w = cfg.logger.wandb
    extra = {"mode": "disabled"} if w.mode == "disabled" else {}
    # Offline runs land in <run dir>/wandb/offline-run-*; `wandb sync` uploads them later.
    return WandbLogger(
        name=w.run_name or f"{cfg.name}/{run_dir.name}",
        save_dir=str(run_dir),
        project=w.project,
        entity=w.entity,
        offline=w.mode == "offline",
        **extra,
    )


def _close_loggers(loggers: list) -> None:
    """W&B writes its files from a background process: finish the run so they are complete
    when train() returns (other loggers close themselves in Lightning's finalize)."""
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger" and logger._experiment is not None:
            logger.experiment.finish()


def build_strategy(cfg: RunConfig) -> Any:
    """Lightning's strategy object. fsdp, tp and fsdp_tp all use ModelParallelStrategy: it builds
    the (data_parallel, tensor_parallel) device mesh and calls the module's configure_model, where
    parallel.py applies FSDP2 and tensor parallel; it runs on CPU (gloo) as well as on GPUs."""
    s = cfg.strategy
    if s.name == "ddp":
        from pytorch_lightning.strategies import DDPStrategy

        return DDPStrategy(find_unused_parameters=s.find_unused_parameters)
    if s.name in ("fsdp", "tp", "fsdp_tp"):
        from pytorch_lightning.strategies import ModelParallelStrategy

        tp = tensor_parallel_size(s)
        world = cfg.trainer.devices * cfg.trainer.num_nodes
        # Sharded checkpoints: each rank writes its shard (no gather of the whole model on rank 0),
        # and the directory loads on any number of processes.
        return ModelParallelStrategy(
            data_parallel_size=world // tp, tensor_parallel_size=tp, save_distributed_checkpoint=True
        )
    if s.name.startswith("deepspeed"):
        from pytorch_lightning.strategies import DeepSpeedStrategy

        return DeepSpeedStrategy(
            stage=3 if s.name.endswith("zero3") else 2,
            offload_optimizer=s.offload_optimizer,
            offload_parameters=s.offload_parameters,
        )
    return "auto"


def build_plugins() -> list:
    """Under SLURM, Lightning's own requeue handler is off: RequeueOnSignal saves at an epoch end."""
    from lightning_fabric.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def build_trainer(cfg: RunConfig, run_dir: Path, callbacks: list, loggers: list) -> pl.Trainer:
    from bigtrain.checkpoint_io import AtomicCheckpointIO

    t = cfg.trainer
    progress = t.enable_progress_bar and cfg.callbacks.progress_bar != "none"
    precision = "32-true" if t.precision == "32" else t.precision
    # Fused steps clip in the module (Lightning refuses clipping settings without its own loop).
    clip = t.gradient_clip_val if steps_per_call(cfg) == 1 else None
    return pl.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=build_strategy(cfg),
        precision=precision,
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=clip,
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


def start_checkpoint(cfg: RunConfig, run_dir: Path) -> str | None:
    """Where fit starts: ckpt_path; or, for `resume=` and inside a SLURM job that already left
    checkpoints in its run directory (a requeue), the newest intact checkpoint of the run."""
    from bigtrain.checkpointing import newest_intact
    from bigtrain.config import ConfigError

    ckpt_dir = run_dir / "checkpoints"
    if in_slurm_job() and cfg.resume is None:
        # The run directory is named after the job id: a checkpoint in it was left by this same
        # job before a requeue. Lightning's hpc checkpoint (a preemption) is the newest state.
        hpc, _ = newest_hpc_checkpoint(run_dir)
        if hpc is not None:
            return str(hpc)
        if not (ckpt_dir.is_dir() and any(ckpt_dir.glob("*.ckpt"))):
            return cfg.ckpt_path
    elif cfg.resume is None:
        return cfg.ckpt_path
    say = rank_zero_only(lambda msg: print(f"resume: {msg}", flush=True))
    found = newest_intact(ckpt_dir, cfg.trust_checkpoint, say, clean=rank_zero_only.rank == 0)
    if found is None and ckpt_dir.is_dir() and any(ckpt_dir.glob("*.ckpt")):
        raise ConfigError(
            f"resume={cfg.resume}: no checkpoint in {ckpt_dir} is usable (see above); start a new run"
        )
    say(f"continuing from {found}" if found else "no checkpoint was written yet: starting from step 0")
    return str(found) if found else None


def _check_output(cfg: RunConfig, run_dir: Path, plan: dict) -> None:
    """Before training: the run directory takes files and has room for the checkpoints."""
    from bigtrain.config import ConfigError
    from bigtrain.rundir import RunDirError, check_writable

    # A checkpoint holds weights and two Adam moments (fp32: 12 bytes a parameter); a save needs
    # room for the new file while the old one still exists, and best and last are kept.
    need = 12 * plan["params"]["total"] * 3
    try:
        check_writable(run_dir, what="run directory", need=need)
    except RunDirError as e:
        raise ConfigError(str(e)) from e


def train(cfg: RunConfig, run_dir: str | Path) -> dict:
    """Plan, fit, test the best checkpoint, and write results.json in `run_dir`. Returns the results."""
    start = time.perf_counter()
    run_dir = Path(run_dir)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    spec, plan = run_plan(cfg, run_dir, rank_zero_only.rank)
    if cfg.dry_run:
        return {"status": "planned", "plan": plan}
    _check_output(cfg, run_dir, plan)
    ckpt_path = start_checkpoint(cfg, run_dir)

    results = empty_results(cfg.name)
    results["params"] = plan["params"]["total"]
    results["slurm_job_id"] = job_id() if in_slurm_job() else None
    results["steps_per_call"] = steps_per_call(cfg)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    _print_data(dm)
    stats = getattr(dm, "stats", {})
    if stats:
        results["data"] = stats
    module = build_module(cfg, spec, stats.get("bytes_per_token", 1.0))
    if cfg.tricks.finders.lr.enabled or cfg.tricks.finders.batch_size.enabled:
        from bigtrain.callbacks.finders import run_finders

        results["finders"] = run_finders(module, dm, cfg, run_dir / "plots")
    callbacks = build_callbacks(cfg, run_dir, plan)
    loggers = build_loggers(cfg, run_dir, resuming=ckpt_path is not None)
    trainer = build_trainer(cfg, run_dir, callbacks, loggers)
    ckpt_cb = trainer.checkpoint_callback
    throughput = next(c for c in callbacks if type(c).__name__ == "Throughput")
    requeuer = next((c for c in callbacks if type(c).__name__ == "RequeueOnSignal"), None)
    resume_state = next(c for c in callbacks if type(c).__name__ == "ResumeState")
    memory = next(c for c in callbacks if type(c).__name__ == "MemoryWatch")
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        # Hyperparameters went to the loggers when fit started; testing would send them again.
        trainer.enable_autolog_hparams = False
        swa = cfg.tricks.swa.enabled
        if swa:  # the average exists only now, after fit: save it and test it
            trainer.save_checkpoint(run_dir / "checkpoints" / "swa.ckpt")
        if requeuer is not None and requeuer.requeue_requested:
            results["status"] = "requeued"
        elif cfg.test_after_fit:
            best = ckpt_cb.best_model_path if ckpt_cb is not None and ckpt_cb.best_model_path else None
            best = None if swa else best
            tested = trainer.test(module, datamodule=dm, ckpt_path=best, verbose=False)
            results["test"] = strip_stage(tested[0] if tested else {}, "test")
            if module.test_artifacts:
                results["confusion_matrix"] = module.test_artifacts["confusion_matrix"].tolist()
        if results["status"] != "requeued":
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
        results.update(_trick_results(cfg, callbacks))
        results["resumed"] = resume_state.resumed
        results["memory"] = memory.summary()
        samples = next((c for c in callbacks if type(c).__name__ == "Samples"), None)
        if samples is not None:
            results["samples"] = samples.last
        results["wall_seconds"] = round(time.perf_counter() - start, 3)
        if trainer.is_global_zero:
            write_json_atomic(run_dir / RESULTS_FILE, results)
        _close_loggers(loggers)
    if trainer.is_global_zero:
        print_summary(results, run_dir)
        if results["status"] == "requeued":
            # Last: SLURM stops this job right away and starts it again with the same id.
            requeue()
    return results
