"""The loggers a run writes to: CSV and TensorBoard in the run directory, MLflow, W&B."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from bigtrain.config import RunConfig


def build_loggers(cfg: RunConfig, run_dir: Path, resuming: bool = False) -> list:
    """Loggers writing straight into the run directory (version ''), so a resumed run keeps its
    logger version: the same metrics.csv and TensorBoard folder."""
    from pytorch_lightning import loggers

    # The run directory already holds plan.json and .hydra/ when the loggers start; they only
    # ever write their own files there, so Lightning's "not empty" warning is noise.
    warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")

    out = []
    if cfg.logger.csv is not None:
        from bigtrain.runs.csv_log import RunCSVLogger

        out.append(
            RunCSVLogger(run_dir, append=resuming, flush_every=cfg.logger.csv.flush_logs_every_n_steps)
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
        # MLflow tags are key-value pairs: each of the run's tags is a key, all of them one value.
        tags={**dict.fromkeys(cfg.tags, "true"), "bigtrain.tags": ",".join(cfg.tags)} if cfg.tags else None,
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
        tags=list(cfg.tags) or None,
        **extra,
    )


def log_final_hparams(loggers: list, hparams: dict, results: dict) -> None:
    """TensorBoard's HPARAMS tab needs the hyperparameters written together with metrics: once
    the run has its best validation and test values, they go in under `hp/<stage>_<name>`."""
    from pytorch_lightning.loggers import TensorBoardLogger

    metrics = {
        f"hp/{stage}_{name}": float(value)
        for stage in ("val", "test")
        for name, value in (results.get(stage) or {}).items()
        if isinstance(value, (int, float))
    }
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger) and metrics:
            logger.log_hyperparams(hparams, metrics=metrics, step=results.get("global_step"))
            # Lightning closed its writer when fit and test ended; these events went to a new
            # one, which nothing else flushes before the process ends.
            logger.experiment.flush()


def close_loggers(loggers: list) -> None:
    """W&B writes its files from a background process: finish its run so they are complete when
    train() returns (other loggers close themselves in Lightning's finalize)."""
    from pytorch_lightning.loggers import WandbLogger

    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        if wandb.run is not None:
            wandb.finish()
