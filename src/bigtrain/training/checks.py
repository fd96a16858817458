"""Config checks of training: when it stops, metrics and monitors, schedules, optimizer kernels,
weight averaging, the non-finite loss policy, the finders and the user's extra callbacks.

Each check takes the RunConfig and yields one line per problem, naming the fix (runs/validate.py
runs them in order). Only check_callback_targets imports more than bigtrain.config: the user's
callback modules.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bigtrain.config import REGRESSION_METRICS, RunConfig, did_you_mean
from bigtrain.data import source

LM_METRICS = ("ppl", "bpb")
CTC_METRICS = ("cer", "wer")  # training/metrics.py's; this module stays torch-free


def check_stopping(cfg: RunConfig) -> Iterator[str]:
    """At least one of max_epochs and max_steps must end training, and neither may end it before
    its first step: Lightning reads 0 as "stop now" (-1 is "no limit") and the run would report
    `completed` with nothing trained. (A training split too small for one step is
    data/checks.check_train_batches'.)"""
    t = cfg.trainer
    if t.max_epochs == -1 and t.max_steps == -1:
        yield "training would never stop: set trainer.max_epochs or trainer.max_steps"
    for key, other in (("max_epochs", "max_steps"), ("max_steps", "max_epochs")):
        if getattr(t, key) == 0:
            unlimited = f", or to -1 for no limit (trainer.{other} then ends training)"
            yield f"trainer.{key}=0 trains nothing: set trainer.{key} to at least 1" + (
                unlimited if getattr(t, other) != -1 else ""
            )


def check_metrics(cfg: RunConfig) -> Iterator[str]:
    """Language-model metrics for token data, error rates for transcripts, classification
    metrics for the rest."""
    names, data = cfg.metrics.names, source(cfg.data.name)
    tokens = data.inputs(cfg.data.name) == "tokens"
    transcribed = getattr(cfg.data, "transcribed", False)
    if transcribed:
        bad = [n for n in names if n not in CTC_METRICS]
        if bad:
            yield f"metrics.names has {bad[0]}, but data.manifest gives transcripts: use metrics=ctc"
        return
    bad = [n for n in names if n in CTC_METRICS]
    if bad:
        yield f"metrics.names has {bad[0]}, a transcription metric, but data={cfg.data.name} has no transcripts: use metrics=default"
        return
    if tokens:
        bad = [n for n in names if n not in ("acc", *LM_METRICS)]
        if bad:
            yield f"metrics.names has {bad[0]}, a classification metric: use metrics=lm"
    else:
        bad = [n for n in names if n in LM_METRICS]
        if bad:
            yield f"metrics.names has {bad[0]}, a language-model metric: use metrics=default"
    if not tokens and not data.task_from_data:  # a table's target decides (data/tabular_record.py)
        bad = [n for n in names if n in REGRESSION_METRICS]
        if bad:
            yield f"metrics.names has {bad[0]}, a regression metric, but data={cfg.data.name} has classes: use metrics=default"


def _never_logged(key: str, value: str, valid: set[str]) -> str:
    return (
        f"{key}={value} is never logged{did_you_mean(value, sorted(valid))}: "
        f"choose one of {', '.join(sorted(valid))}"
    )


def check_checkpoint_monitor(cfg: RunConfig) -> Iterator[str]:
    """The checkpoint (and early stopping) monitor must be a key that is logged."""
    monitor = cfg.callbacks.checkpoint.monitor
    valid = {f"val/{m}" for m in (*cfg.metrics.names, "loss")} | {"train/loss"}
    if monitor not in valid:
        yield _never_logged("callbacks.checkpoint.monitor", monitor, valid)


def check_schedule(cfg: RunConfig) -> Iterator[str]:
    """Per-epoch schedules need epochs; plateau needs a logged monitor, validation, no warmup."""
    s, t = cfg.sched, cfg.trainer
    if s.interval == "epoch" and t.max_epochs == -1:
        yield (
            "sched.interval=epoch counts epochs but trainer.max_epochs=-1: set trainer.max_epochs "
            "or sched.interval=step"
        )
    if s.name != "plateau":
        return
    valid = {f"val/{m}" for m in (*cfg.metrics.names, "loss")}
    if s.monitor not in valid:
        yield _never_logged("sched.monitor", s.monitor, valid)
    if s.warmup_steps or s.warmup_fraction:
        yield "sched=plateau has no warmup: set sched.warmup_steps=0 and sched.warmup_fraction=0"
    if t.limit_val_batches == 0:
        yield "sched=plateau needs validation but trainer.limit_val_batches=0: drop it"


def check_optimizer(cfg: RunConfig) -> Iterator[str]:
    """Fused kernels only where torch has them and where Lightning can still clip."""
    o, t = cfg.optim, cfg.trainer
    if o.implementation == "fused" and o.name == "muon":
        yield "optim=muon has no fused kernel: set optim.implementation=auto or foreach"
    elif o.implementation == "fused" and t.precision == "16-mixed" and t.gradient_clip_val:
        yield (
            "a fused optimizer unscales fp16 gradients itself, so Lightning cannot clip them: "
            "set optim.implementation=foreach or drop trainer.gradient_clip_val"
        )


def check_averaging(cfg: RunConfig) -> Iterator[str]:
    """EMA or SWA, not both; SWA averages epoch ends inside the run."""
    k, t = cfg.tricks, cfg.trainer
    if k.ema.enabled and k.swa.enabled:
        yield "tricks.ema and tricks.swa both average weights: enable only one of them"
    sharded = cfg.strategy.name in ("fsdp", "tp", "fsdp_tp", "deepspeed_zero3")
    if k.ema.enabled and sharded:
        # Lightning's weight averaging keeps a whole copy of the model: sharded weights have none.
        yield f"tricks.ema keeps a whole copy of the weights, which strategy={cfg.strategy.name} shards: use strategy=ddp or drop tricks.ema"
    if not k.swa.enabled:
        return
    if t.max_epochs == -1:
        yield "tricks.swa averages epoch ends and needs trainer.max_epochs: set it"
    elif k.swa.epoch_start >= 1 and k.swa.epoch_start > t.max_epochs:
        yield (
            f"tricks.swa.epoch_start={k.swa.epoch_start:g} is after the last epoch ({t.max_epochs}): "
            "set it below trainer.max_epochs or as a fraction < 1"
        )


def check_nonfinite(cfg: RunConfig) -> Iterator[str]:
    """Skipping a batch is a decision of one process, which data parallel cannot take."""
    if cfg.tricks.nonfinite.policy == "skip" and cfg.data_parallel_size > 1:
        yield (
            "tricks.nonfinite.policy=skip drops a batch on one process, which DDP cannot do: "
            "use tricks.nonfinite.policy=stop with more than one device"
        )


def check_finders(cfg: RunConfig) -> Iterator[str]:
    """The finders run on one device, over a range that is not empty."""
    f = cfg.tricks.finders
    if (f.lr.enabled or f.batch_size.enabled) and source(cfg.data.name).inputs(cfg.data.name) == "audio":
        yield (
            f"the finders train on the data's samples as they are in memory, and data={cfg.data.name} "
            "makes its features per batch: set tricks.finders.lr.enabled=false and tricks.finders.batch_size.enabled=false"
        )
    if (f.lr.enabled or f.batch_size.enabled) and cfg.data_parallel_size > 1:
        yield (
            "the finders measure one device before training: run them with trainer.devices=1 "
            "(and num_nodes=1), then set the values they suggest"
        )
    if f.lr.min_lr >= f.lr.max_lr:
        yield f"tricks.finders.lr.min_lr={f.lr.min_lr:g} must be below max_lr={f.lr.max_lr:g}: lower min_lr"
    if f.batch_size.start > f.batch_size.max:
        yield (
            f"tricks.finders.batch_size.start={f.batch_size.start} is above max={f.batch_size.max}: lower start"
        )


def check_extra_callbacks(cfg: RunConfig) -> Iterator[str]:
    """Each item of callbacks.extra is a mapping whose `_target_` names the class to build."""
    for i, item in enumerate(cfg.callbacks.extra):
        target = item.get("_target_") if isinstance(item, dict) else None
        if not isinstance(target, str) or not target.strip():
            yield (
                f"callbacks.extra[{i}]={_short(item)} is not a callback: give a mapping with a "
                "_target_, e.g. callbacks.extra=[{_target_: my_pkg.MyCallback, arg: 1}]"
            )


def check_callback_targets(cfg: RunConfig) -> Iterator[str]:
    """Each of callbacks.extra imports, is a Lightning Callback, and takes its arguments. Needs
    every item to be a mapping with a _target_ (check_extra_callbacks). Imports the user's modules."""
    if not cfg.callbacks.extra:
        return
    import pytorch_lightning as pl

    from bigtrain.targets import target_problems

    for i, item in enumerate(cfg.callbacks.extra):
        arguments: dict[str, Any] = {k: v for k, v in item.items() if k != "_target_"}
        yield from target_problems(
            item["_target_"], arguments, f"callbacks.extra[{i}]", pl.Callback, "pytorch_lightning.Callback"
        )


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."
