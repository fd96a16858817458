"""One run: plan, fit, test the best checkpoint, and results.json (also on failure or interrupt)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only

from bigtrain.build import RunCallbacks, build_callbacks, build_module, build_trainer, trick_results
from bigtrain.cluster.slurm import in_slurm_job, job_id, newest_hpc_checkpoint, requeue
from bigtrain.config import ConfigError, RunConfig
from bigtrain.data import build_datamodule
from bigtrain.runs.loggers import build_loggers, close_loggers, log_final_hparams
from bigtrain.runs.plan import run_plan
from bigtrain.runs.results import RESULTS_FILE, empty_results, print_summary, strip_stage, write_json_atomic
from bigtrain.training.module import BigtrainModule


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
    from bigtrain.runs.checkpointing import newest_intact

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


def _check_output(run_dir: Path, plan: dict) -> None:
    """Before training: the run directory takes files and has room for the checkpoints."""
    from bigtrain.runs.rundir import RunDirError, check_writable

    # A checkpoint holds weights and two Adam moments (fp32: 12 bytes a parameter); a save needs
    # room for the new file while the old one still exists, and best and last are kept.
    need = 12 * plan["params"]["total"] * 3
    try:
        check_writable(run_dir, what="run directory", need=need)
    except RunDirError as e:
        raise ConfigError(str(e)) from e


def _fit_and_test(
    cfg: RunConfig, run_dir: Path, trainer: pl.Trainer, module, dm, ckpt_path, results, requeue_cb
) -> None:
    """fit, then (unless a requeue was asked for) test the best checkpoint, filling `results`."""
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    # Hyperparameters went to the loggers when fit started; testing would send them again.
    trainer.enable_autolog_hparams = False
    swa = cfg.tricks.swa.enabled
    if swa:  # the average exists only now, after fit: save it and test it
        trainer.save_checkpoint(run_dir / "checkpoints" / "swa.ckpt")
    if requeue_cb is not None and requeue_cb.requeue_requested:
        results["status"] = "requeued"
        return
    if cfg.test_after_fit:
        ckpt_cb = trainer.checkpoint_callback
        best = ckpt_cb.best_model_path if ckpt_cb is not None and ckpt_cb.best_model_path else None
        tested = trainer.test(module, datamodule=dm, ckpt_path=None if swa else best, verbose=False)
        results["test"] = strip_stage(tested[0] if tested else {}, "test")
        if module.test_artifacts:
            results["confusion_matrix"] = module.test_artifacts["confusion_matrix"].tolist()
    results["status"] = "interrupted" if trainer.interrupted else "completed"


def _collect(
    cfg, run_dir: Path, trainer, module, callbacks: RunCallbacks, results: dict, start: float
) -> None:
    """The results.json blocks that exist whatever way fit ended."""
    ckpt_cb = trainer.checkpoint_callback
    results["global_step"] = trainer.global_step
    results["epochs"] = trainer.current_epoch
    results["val"] = _best_val(module, ckpt_cb, cfg.callbacks.checkpoint.monitor)
    if ckpt_cb is not None and ckpt_cb.best_model_path:
        results["best_checkpoint"] = os.path.relpath(ckpt_cb.best_model_path, run_dir)
    results["throughput"] = callbacks.throughput.summary()
    results.update(trick_results(cfg, callbacks))
    results["resumed"] = callbacks.resume_state.resumed
    results["memory"] = callbacks.memory.summary()
    if callbacks.samples is not None:
        results["samples"] = callbacks.samples.last
    results["wall_seconds"] = round(time.perf_counter() - start, 3)


def train(cfg: RunConfig, run_dir: str | Path) -> dict:
    """Plan, fit, test the best checkpoint, and write results.json in `run_dir`. Returns the results."""
    start = time.perf_counter()
    run_dir = Path(run_dir)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    spec, plan = run_plan(cfg, run_dir, rank_zero_only.rank)
    if cfg.dry_run:
        return {"status": "planned", "plan": plan}
    _check_output(run_dir, plan)
    ckpt_path = start_checkpoint(cfg, run_dir)

    results = empty_results(cfg.name)
    results["params"] = plan["params"]["total"]
    results["slurm_job_id"] = job_id() if in_slurm_job() else None
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
    trainer = build_trainer(cfg, run_dir, callbacks.all, loggers)
    try:
        _fit_and_test(cfg, run_dir, trainer, module, dm, ckpt_path, results, callbacks.requeue)
    except (KeyboardInterrupt, SystemExit):
        results["status"] = "interrupted"
        raise
    except BaseException as e:
        results["status"] = "failed"
        results["error"] = f"{type(e).__name__}: {e}"
        raise
    finally:
        _collect(cfg, run_dir, trainer, module, callbacks, results, start)
        if trainer.is_global_zero:
            write_json_atomic(run_dir / RESULTS_FILE, results)
            log_final_hparams(loggers, module.hparams, results)
        close_loggers(loggers)
    if trainer.is_global_zero:
        print_summary(results, run_dir)
        if results["status"] == "requeued":
            # Last: SLURM stops this job right away and starts it again with the same id.
            requeue()
    return results
