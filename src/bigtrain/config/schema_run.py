"""Schemas of `trainer`, `strategy`, `metrics`, `callbacks`, `logger`, and RunConfig: the whole run.

Fields carry types and range rules only; every value comes from conf/ (conf/train.yaml for the
top-level keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from bigtrain.config.convert import opt
from bigtrain.config.errors import config_error
from bigtrain.config.schema_optim import TricksConfig
from bigtrain.config.schema_strategy import StrategyConfig, tensor_parallel_size

Precision = Literal["32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "64-true"]


@dataclass(frozen=True)
class TrainerConfig:
    """Passed to Lightning's Trainer."""

    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"]
    devices: int = opt("processes per node", gt=0)
    num_nodes: int = opt(gt=0)
    precision: Precision
    max_epochs: int = opt("-1 = no limit", ge=-1)
    max_steps: int = opt("-1 = no limit", ge=-1)
    accumulate_grad_batches: int = opt(gt=0)
    gradient_clip_val: float | None = opt(gt=0.0)
    gradient_clip_algorithm: Literal["norm", "value"]
    log_every_n_steps: int = opt(gt=0)
    val_check_interval: int | float = opt(
        "int: every N training batches; float: that fraction of an epoch", gt=0
    )
    check_val_every_n_epoch: int = opt(gt=0)
    limit_train_batches: int | float | None = opt(
        "int: batches per epoch; float: that fraction; null = all", gt=0
    )
    limit_val_batches: int | float | None = opt(
        "int: batches; float: that fraction; 0 = none; null = all", ge=0
    )
    limit_test_batches: int | float | None = opt("int: batches; float: that fraction; null = all", gt=0)
    deterministic: bool
    enable_progress_bar: bool
    lightning: Any = opt("more Trainer arguments, added with trainer.NAME=value (config/trainer_args.py)")

    def __post_init__(self) -> None:
        """Lightning's meaning of the batch limits: an int counts batches, a float is a fraction,
        so a float is at most 1 (the schema checks the lower bounds)."""
        errors = [line for key in BATCH_LIMITS if (line := fraction_error(key, getattr(self, key)))]
        if errors:
            raise config_error(errors)


BATCH_LIMITS = ("val_check_interval", "limit_train_batches", "limit_val_batches", "limit_test_batches")


def fraction_error(key: str, value: Any) -> str | None:
    """The error line for a float batch limit above 1, naming the integer it may have meant."""
    if not isinstance(value, float) or value <= 1.0:
        return None
    whole = (
        f"trainer.{key}={int(value)} for {int(value)} batches"
        if value.is_integer()
        else "an integer for batches"
    )
    lowest = "[0" if key == "limit_val_batches" else "(0"
    return (
        f"trainer.{key}={value} is a fraction above 1: give a float in {lowest}, 1] (1.0 = all), or {whole}"
    )


# --------------------------------------------------------------------------- metrics, callbacks, loggers

# ppl and bpb are language-model metrics (perplexity, bits per byte); acc is token accuracy there.
# cer and wer are transcription metrics (character and word error rates).
MetricName = Literal[
    "acc", "precision", "recall", "f1", "auroc", "ppl", "bpb", "mae", "rmse", "r2", "cer", "wer"
]
REGRESSION_METRICS = ("mae", "rmse", "r2")  # the metric names of a regressed target


@dataclass(frozen=True)
class MetricsConfig:
    """Metrics computed per stage."""

    names: list[MetricName]
    train: bool = opt("also on training batches")


@dataclass(frozen=True)
class CheckpointConfig:
    """Lightning's ModelCheckpoint."""

    monitor: str = opt("a logged key: val/loss, val/acc, train/loss, ...")
    mode: Literal["min", "max"]
    save_last: bool
    save_top_k: int = opt(ge=-1)
    every_n_train_steps: int | None = opt("also save last.ckpt every N optimizer steps", gt=0)


@dataclass(frozen=True)
class EarlyStoppingConfig:
    """Stop when the checkpoint monitor stops improving."""

    enabled: bool
    patience: int = opt(gt=0)
    min_delta: float = opt(ge=0.0)


@dataclass(frozen=True)
class SamplesConfig:
    """Text generated from `prompt` after each validation (language models only)."""

    enabled: bool
    prompt: str
    max_new_tokens: int = opt(gt=0)
    temperature: float = opt("0 = greedy decoding", ge=0.0)
    top_k: int | None = opt(gt=0)
    num_samples: int = opt(gt=0)


@dataclass(frozen=True)
class ThroughputConfig:
    """Samples, tokens and FLOPs per second, and MFU."""

    warmup: int = opt("training batches not timed at the start", ge=0)
    peak_flops: float | None = opt("peak FLOP/s of one device for MFU; null = known-GPU table", gt=0.0)


@dataclass(frozen=True)
class CallbacksConfig:
    """Lightning's callbacks and bigtrain's own, plus the user's (`extra`)."""

    checkpoint: CheckpointConfig
    early_stopping: EarlyStoppingConfig
    samples: SamplesConfig
    throughput: ThroughputConfig
    progress_bar: Literal["rich", "tqdm", "none"]
    progress_refresh_rate: int = opt("redraw the progress bar every N batches", gt=0)
    extra: list[Any] = opt("your own Lightning callbacks: [{_target_: pkg.Class, arg: value}]")
    model_summary_depth: int = opt(ge=0)
    plots: bool
    lr_monitor: bool
    print_config: bool | Literal["full"] = opt(
        "true: the chosen group options and the values that differ from them; full: every value"
    )


@dataclass(frozen=True)
class CSVLoggerConfig:
    """metrics.csv in the run directory."""

    flush_logs_every_n_steps: int = opt(gt=0)


@dataclass(frozen=True)
class TensorBoardLoggerConfig:
    """TensorBoard events in the run directory."""

    log_graph: bool


@dataclass(frozen=True)
class MLflowLoggerConfig:
    """MLflow: a tracking server, or a file store in the run directory."""

    tracking_uri: str | None = opt("null = a file store in <run dir>/mlruns")
    experiment_name: str | None = opt("null = the run's name")
    run_name: str | None


@dataclass(frozen=True)
class WandbLoggerConfig:
    """Weights & Biases, offline unless mode=online."""

    project: str = opt(nonempty=True)
    entity: str | None
    run_name: str | None
    mode: Literal["offline", "online", "disabled"]


@dataclass(frozen=True)
class LoggerConfig:
    """Each logger is on when its key holds a group, off when null."""

    csv: CSVLoggerConfig | None
    tensorboard: TensorBoardLoggerConfig | None
    mlflow: MLflowLoggerConfig | None
    wandb: WandbLoggerConfig | None


@dataclass(frozen=True)
class RunConfig:
    """The whole validated run: what builders receive."""

    # Sections with variants hold one of the dataclasses registered with @variant for them.
    data: Any
    model: Any
    optim: Any
    sched: Any
    trainer: TrainerConfig
    strategy: StrategyConfig
    metrics: MetricsConfig
    callbacks: CallbacksConfig
    logger: LoggerConfig
    tricks: TricksConfig
    name: str = opt("run directories land in outputs/<name>/", nonempty=True)
    seed: int = opt("seeds Python, NumPy and torch; NumPy takes 0 to 2^32 - 1", ge=0, le=2**32 - 1)
    ckpt_path: str | None = opt("a checkpoint to start from")
    checkpoint_dir: str | None = opt(
        "where checkpoints go: a local folder or an fsspec URL (s3://bucket/run1); null = <run dir>/checkpoints"
    )
    dry_run: bool = opt("print and write the plan, then stop")
    check_memory: bool = opt("refuse a run whose planned memory per device exceeds this machine's")
    test_after_fit: bool
    resume: str | None = opt("a run directory to continue (set by `bigtrain resume=DIR`)")
    trust_checkpoint: bool = opt(
        "allow checkpoints that need unpickling code to load (typed on the command line only)"
    )
    trust_code: bool = opt(
        "build `_target_`s outside bigtrain named by a run directory (typed on the command line only)"
    )
    overwrite: bool = opt("a new run into a directory that holds a finished run replaces that run's files")
    accept_changed_data: bool = opt("resume and eval on data files changed since the run trained on them")
    tags: list[str] = opt("labels for this run, sent to every logger and written to results.json")

    @property
    def data_parallel_size(self) -> int:
        """Processes that each see different samples: all of them, over the tensor-parallel size."""
        return self.trainer.devices * self.trainer.num_nodes // tensor_parallel_size(self.strategy)

    @property
    def micro_batch_size(self) -> int:
        """Samples per device per forward/backward pass."""
        return self.data.batch_size // (self.data_parallel_size * self.trainer.accumulate_grad_batches)
