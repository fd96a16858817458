"""The loggers a run writes to: CSV and TensorBoard in the run directory, MLflow, W&B."""

from __future__ import annotations

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


# logger=mlflow without a tracking_uri: outputs/mlflow.db (runs, parameters, metrics, tags) and
# outputs/mlartifacts/ (their files), relative to the directory bigtrain runs in.
MLFLOW_ROOT, MLFLOW_DB, MLFLOW_ARTIFACTS = "outputs", "mlflow.db", "mlartifacts"


def _mlflow_logger(cfg: RunConfig, run_dir: Path):
    import logging

    import mlflow  # noqa: F401  (on import it gives its loggers a console handler of their own)
    from pytorch_lightning.loggers import MLFlowLogger

    # MLflow's info lines (creating the database's tables, ...) go where every library's go: the
    # run's log file, the console only from WARNING up (conf/hydra/default.yaml).
    for name in ("mlflow", "alembic", "sqlalchemy.engine", "huey"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    m = cfg.logger.mlflow
    uri, artifacts = m.tracking_uri, None
    if uri is None:
        # One store for every run started from this directory (multirun jobs included): a SQLite
        # database, MLflow's supported local backend, with the artifacts beside it.
        root = Path(MLFLOW_ROOT).absolute()
        root.mkdir(parents=True, exist_ok=True)
        uri, artifacts = f"sqlite:///{root / MLFLOW_DB}", (root / MLFLOW_ARTIFACTS).as_uri()
    return MLFlowLogger(
        experiment_name=m.experiment_name or cfg.name,
        run_name=m.run_name or run_dir.name,
        tracking_uri=uri,
        artifact_location=artifacts,
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


def log_run_files(loggers: list, run_dir: Path) -> None:
    """MLflow gets results.json and the plots as artifacts of the run, once they exist."""
    from pytorch_lightning.loggers import MLFlowLogger

    for logger in loggers:
        if isinstance(logger, MLFlowLogger) and logger.run_id is not None:
            client = logger.experiment
            if (run_dir / "results.json").is_file():
                client.log_artifact(logger.run_id, str(run_dir / "results.json"))
            if (run_dir / "plots").is_dir():
                client.log_artifacts(logger.run_id, str(run_dir / "plots"), "plots")


def close_loggers(loggers: list) -> None:
    """W&B writes its files from a background process: finish its run so they are complete when
    train() returns (other loggers close themselves in Lightning's finalize)."""
    from pytorch_lightning.loggers import WandbLogger

    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        if wandb.run is not None:
            wandb.finish()
