"""Schemas of `optim` (one dataclass per optimizer), `sched` (per schedule) and `tricks`.

Fields carry types and range rules only; every value comes from conf/optim/, conf/sched/ and
conf/tricks/.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bigtrain.config.convert import opt, variant

NoDecay = Literal["bias", "norm", "embedding"]
Implementation = Literal["auto", "for_loop", "foreach", "fused"]

# --------------------------------------------------------------------------- optimizers


@dataclass(frozen=True, kw_only=True)
class OptimCommon:
    """Keys every optimizer has: rate, weight decay groups and the kernel implementation."""

    lr: float = opt(gt=0.0)
    weight_decay: float = opt(ge=0.0)
    no_decay: list[NoDecay] = opt("parameter kinds kept out of weight decay")
    implementation: Implementation = opt(
        "auto: the fused kernel where torch has one for the parameters, else torch's default"
    )


@variant("optim", "adam", "adamw")
@dataclass(frozen=True, kw_only=True)
class AdamConfig(OptimCommon):
    """Adam, or AdamW with decoupled weight decay."""

    name: Literal["adam", "adamw"]
    betas: list[float] = opt(ge=0.0, lt=1.0, length=2)
    eps: float = opt(gt=0.0)


@variant("optim", "sgd")
@dataclass(frozen=True, kw_only=True)
class SGDConfig(OptimCommon):
    """SGD with (Nesterov) momentum."""

    name: Literal["sgd"]
    momentum: float = opt(ge=0.0, lt=1.0)
    nesterov: bool


@variant("optim", "muon")
@dataclass(frozen=True, kw_only=True)
class MuonConfig(OptimCommon):
    """torch.optim.Muon on 2-D weight matrices; every other tensor goes to the fallback optimizer."""

    name: Literal["muon"]
    momentum: float = opt(ge=0.0, lt=1.0)
    nesterov: bool
    ns_steps: int = opt("Newton-Schulz iterations that orthogonalise the update", gt=0)
    adjust_lr: Literal["original", "match_rms_adamw"]
    fallback: Literal["adamw", "adam"] = opt("optimizer of biases, norms, embeddings, convs")
    fallback_lr: float = opt(gt=0.0)
    betas: list[float] = opt(ge=0.0, lt=1.0, length=2)
    eps: float = opt(gt=0.0)


# --------------------------------------------------------------------------- schedules

SchedInterval = Literal["step", "epoch"]


@dataclass(frozen=True, kw_only=True)
class SchedCommon:
    """Keys every schedule has: how often it steps, the warmup and the floor."""

    interval: SchedInterval = opt("step: per optimizer step; epoch: once per epoch")
    warmup_steps: int = opt("intervals of linear warmup; 0 uses warmup_fraction", ge=0)
    warmup_fraction: float = opt(ge=0.0, lt=1.0)
    min_lr_ratio: float = opt("floor as a fraction of optim.lr", ge=0.0, le=1.0)


@variant("sched", "constant")
@dataclass(frozen=True, kw_only=True)
class ConstantSchedConfig(SchedCommon):
    """The full rate after the warmup."""

    name: Literal["constant"]


@variant("sched", "cosine")
@dataclass(frozen=True, kw_only=True)
class CosineSchedConfig(SchedCommon):
    """Cosine decay to the floor at the last interval."""

    name: Literal["cosine"]


@variant("sched", "linear")
@dataclass(frozen=True, kw_only=True)
class LinearSchedConfig(SchedCommon):
    """Linear decay to the floor at the last interval."""

    name: Literal["linear"]


@variant("sched", "wsd")
@dataclass(frozen=True, kw_only=True)
class WSDSchedConfig(SchedCommon):
    """Warmup, a long stable phase at the full rate, then a short decay to the floor."""

    name: Literal["wsd"]
    decay_fraction: float = opt("last fraction of training spent decaying", gt=0.0, le=1.0)
    decay_shape: Literal["linear", "cosine", "sqrt"]


@variant("sched", "step")
@dataclass(frozen=True, kw_only=True)
class StepSchedConfig(SchedCommon):
    """Multiply the rate by `gamma` every `step_size` intervals."""

    name: Literal["step"]
    step_size: int = opt("intervals between drops", gt=0)
    gamma: float = opt(gt=0.0, le=1.0)


@variant("sched", "exponential")
@dataclass(frozen=True, kw_only=True)
class ExponentialSchedConfig(SchedCommon):
    """Multiply the rate by `gamma` every interval."""

    name: Literal["exponential"]
    gamma: float = opt("factor per interval", gt=0.0, le=1.0)


@variant("sched", "plateau")
@dataclass(frozen=True, kw_only=True)
class PlateauSchedConfig(SchedCommon):
    """Multiply the rate by `factor` when `monitor` stops improving (checked after validation)."""

    name: Literal["plateau"]
    monitor: str
    mode: Literal["min", "max"]
    factor: float = opt(gt=0.0, lt=1.0)
    patience: int = opt("validation runs without improvement before a drop", ge=0)
    threshold: float = opt(ge=0.0)
    cooldown: int = opt(ge=0)


# --------------------------------------------------------------------------- tricks


@dataclass(frozen=True)
class EMAConfig:
    """Exponential moving average of the weights, used for validation, test and export."""

    enabled: bool
    decay: float = opt("ema = decay * ema + (1 - decay) * weights, per optimizer step", gt=0.0, lt=1.0)
    start_step: int = opt("optimizer steps before averaging starts (ema copies the weights until then)", ge=0)


@dataclass(frozen=True)
class SWAConfig:
    """Stochastic weight averaging (Lightning's callback): an equal-weight average of epoch ends."""

    enabled: bool
    lr: float = opt("learning rate held during the averaging phase", gt=0.0)
    epoch_start: float = opt("fraction of max_epochs (< 1) or epoch number (>= 1)", gt=0.0)
    annealing_epochs: int = opt(ge=0)
    annealing_strategy: Literal["cos", "linear"]


@dataclass(frozen=True)
class NonFiniteConfig:
    """What a NaN or infinite training loss does."""

    policy: Literal["stop", "skip"] = opt("stop: save and exit naming the step; skip: drop the batch")
    max_consecutive: int = opt("skip: stop after this many non-finite losses in a row", gt=0)


@dataclass(frozen=True)
class LRFinderConfig:
    """Learning-rate range test: exponentially rising rate over real batches, before training."""

    enabled: bool
    min_lr: float = opt(gt=0.0)
    max_lr: float = opt(gt=0.0)
    num_steps: int = opt(gt=1)
    apply: bool = opt("train with the suggested rate instead of optim.lr")


@dataclass(frozen=True)
class BatchSizeFinderConfig:
    """Doubling search over the micro-batch: what fits in memory, and how fast each one steps."""

    enabled: bool
    start: int = opt("first micro-batch tried", gt=0)
    max: int = opt("largest micro-batch tried", gt=0)
    steps: int = opt("timed optimizer steps per size (after one untimed)", gt=0)
    speed_fraction: float = opt(
        "suggest the smallest size within this fraction of the best samples/s", gt=0.0, le=1.0
    )


@dataclass(frozen=True)
class FindersConfig:
    """The searches that run before training and suggest settings."""

    lr: LRFinderConfig
    batch_size: BatchSizeFinderConfig


@dataclass(frozen=True)
class TricksConfig:
    """Training tricks that are not the optimizer or the schedule (config group `tricks`)."""

    label_smoothing: float = opt("cross-entropy targets (1-e) one-hot + e/classes", ge=0.0, lt=1.0)
    log_grad_norm: bool = opt("log train/grad_norm (before clipping) every log_every_n_steps")
    ema: EMAConfig
    swa: SWAConfig
    nonfinite: NonFiniteConfig
    finders: FindersConfig
