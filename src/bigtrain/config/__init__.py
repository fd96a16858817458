"""Typed schemas for every config group, and the validation that runs before anything is built.

Hydra composes YAML into a DictConfig; `validate` turns it into frozen dataclasses or raises
`ConfigError` with one line that names the override to change. This module imports no torch,
Lightning or Hydra at module level, so config errors come back in well under a second.

Each model family has exactly one config dataclass here (MLPConfig, CNNConfig, ...); the model
files import theirs from this module, so models and validation share one definition.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Union


class ConfigError(ValueError):
    """A bad configuration. The message is one line: what is wrong and which override fixes it."""


def _rule(doc: str = "", **checks: Any) -> dict:
    return {"doc": doc, **checks}


# Sections whose schema is chosen by one key: section -> (key, {value: dataclass}). Filled by
# the @variant decorator on each dataclass below.
VARIANTS: dict[str, tuple[str, dict[str, type]]] = {
    "data": ("name", {}),
    "model": ("family", {}),
    "optim": ("name", {}),
    "sched": ("name", {}),
    "strategy": ("name", {}),
}


def variant(section: str, *names: str):
    """Register a dataclass as the schema of `section` when its key is one of `names`."""

    def register(cls: type) -> type:
        for name in names:
            VARIANTS[section][1][name] = cls
        return cls

    return register


def opt(default: Any = dataclasses.MISSING, doc: str = "", **checks: Any) -> Any:
    """A schema field with range checks: gt, ge, lt, le, nonempty."""
    if isinstance(default, (list, dict)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata=_rule(doc, **checks))
    return field(default=default, metadata=_rule(doc, **checks))


# --------------------------------------------------------------------------- data


@variant("data", "digits", "breast_cancer")
@dataclass(frozen=True)
class SklearnDataConfig:
    """scikit-learn's bundled sets: `digits` (8x8 images, 10 classes), `breast_cancer` (binary)."""

    name: Literal["digits", "breast_cancer"]
    batch_size: int = opt(64, "global batch per optimizer step", gt=0)
    eval_batch_size: int = opt(256, "per-device batch for validation and test", gt=0)
    val_fraction: float = opt(0.15, gt=0.0, lt=1.0)
    test_fraction: float = opt(0.15, gt=0.0, lt=1.0)
    standardize: bool = True
    num_workers: int = opt(0, ge=0)


# --------------------------------------------------------------------------- models


@variant("model", "mlp")
@dataclass(frozen=True)
class MLPConfig:
    """Dense layers `hidden` wide with an activation, optional norm and dropout."""

    family: Literal["mlp"]
    hidden: list[int] = opt([128, 64], nonempty=True, gt=0)
    activation: Literal["relu", "gelu", "silu", "tanh"] = "relu"
    dropout: float = opt(0.0, ge=0.0, lt=1.0)
    norm: Literal["none", "batch", "layer"] = "none"


@variant("model", "cnn")
@dataclass(frozen=True)
class CNNConfig:
    """3x3 conv blocks (conv, ReLU, 2x2 max-pool), then one hidden dense layer."""

    family: Literal["cnn"]
    channels: list[int] = opt([32, 64], nonempty=True, gt=0)
    hidden: int = opt(128, gt=0)
    dropout: float = opt(0.0, ge=0.0, lt=1.0)
    pooled_size: int = opt(4, "feature maps larger than this are average-pooled to it", gt=0)


# --------------------------------------------------------------------------- language models


@variant("data", "text", "stdlib_text")
@dataclass(frozen=True)
class TextDataConfig:
    """Text files cut into fixed windows. `text`: the user's files, folders or globs (`paths`);
    `stdlib_text`: the .py source of the running Python's standard library, capped at `max_bytes`.
    Tokens are bytes (vocabulary 256) unless `tokenizer` names a Hugging Face tokenizers JSON file."""

    name: Literal["text", "stdlib_text"]
    paths: list[str] = opt([], "files, folders or globs (data=text)")
    tokenizer: str | None = opt(None, "a tokenizers JSON file; null = byte-level (vocabulary 256)")
    max_bytes: int | None = opt(None, "read at most this many bytes of text; null = all", gt=0)
    seq_len: int = opt(256, "tokens per training window", gt=0)
    batch_size: int = opt(32, "global batch per optimizer step, in windows", gt=0)
    eval_batch_size: int = opt(32, "per-device batch for validation and test", gt=0)
    val_fraction: float = opt(0.05, gt=0.0, lt=1.0)
    test_fraction: float = opt(0.05, gt=0.0, lt=1.0)
    num_workers: int = opt(0, ge=0)


@variant("data", "tokens")
@dataclass(frozen=True)
class TokensDataConfig:
    """A pre-tokenised corpus on disk (`bigtrain-tokens write`): a flat uint16/uint32 memmap
    `<path>.bin` with `<path>.json` metadata. Training draws random windows per step."""

    name: Literal["tokens"]
    path: str = opt("", "the .bin or .json file written by the tokens writer", nonempty=True)
    seq_len: int = opt(1024, "tokens per training window", gt=0)
    batch_size: int = opt(32, "global batch per optimizer step, in windows", gt=0)
    eval_batch_size: int = opt(32, "per-device batch for validation and test", gt=0)
    val_fraction: float = opt(0.01, gt=0.0, lt=1.0)
    test_fraction: float = opt(0.01, gt=0.0, lt=1.0)
    steps_per_epoch: int | None = opt(None, "optimizer steps per epoch; null = one pass of tokens", gt=0)
    max_eval_windows: int | None = opt(1024, "cap on validation and test windows; null = all", gt=0)
    num_workers: int = opt(0, ge=0)


LM_DATA = {"text", "stdlib_text", "tokens"}
LM_MODELS = {"transformer"}


@variant("model", "transformer")
@dataclass(frozen=True)
class TransformerConfig:
    """A decoder-only Transformer (GPT and LLaMA shapes are presets of it, see conf/model/)."""

    family: Literal["transformer"]
    n_layers: int = opt(2, gt=0)
    d_model: int = opt(64, gt=0)
    n_heads: int = opt(4, gt=0)
    n_kv_heads: int | None = opt(None, "grouped-query attention; null = n_heads", gt=0)
    d_ff: int | None = opt(None, "MLP width; null = 4*d_model (gelu) or 2/3 of that rounded (swiglu)", gt=0)
    vocab_size: int | None = opt(None, "null = the data's vocabulary (256 for bytes)", gt=0)
    max_seq_len: int = opt(2048, "longest context (size of the learned position table)", gt=0)
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    mlp: Literal["gelu", "swiglu"] = "gelu"
    positions: Literal["learned", "rope"] = "learned"
    tie_embeddings: bool = True
    bias: bool = True
    dropout: float = opt(0.0, ge=0.0, lt=1.0)
    norm_eps: float = opt(1e-5, gt=0.0)
    rope_theta: float = opt(10000.0, gt=0.0)

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def ffn_dim(self) -> int:
        if self.d_ff is not None:
            return self.d_ff
        if self.mlp == "gelu":
            return 4 * self.d_model
        # SwiGLU has three matrices instead of two: 2/3 of 4d keeps the parameter count, rounded
        # up to a multiple of 256 as LLaMA does (for matmul tile sizes).
        return -(-(8 * self.d_model // 3) // 256) * 256


# --------------------------------------------------------------------------- user data and models

# Split names a `data.split_column` may hold, and the subfolders an image root may have.
SPLITS = ("train", "val", "test")
TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


@variant("data", "csv")
@dataclass(frozen=True)
class TabularDataConfig:
    """Your own table (CSV or Parquet): one file split by a column or by fractions, or one file per
    split. Numeric features are standardised with training statistics; categorical ones one-hot."""

    name: Literal["csv"]
    path: str | None = opt(None, "one file holding every split")
    train_path: str | None = None
    val_path: str | None = None
    test_path: str | None = None
    target: str | None = opt(None, "the label column (required)")
    features: list[str] | None = opt(None, "feature columns; null = every other column")
    categorical: list[str] = opt([], "feature columns encoded one-hot (categories of the train split)")
    split_column: str | None = opt(None, "column of train/val/test; null = stratified split by fractions")
    standardize: bool = True
    batch_size: int = opt(64, "global batch per optimizer step", gt=0)
    eval_batch_size: int = opt(256, "per-device batch for validation and test", gt=0)
    val_fraction: float = opt(0.15, gt=0.0, lt=1.0)
    test_fraction: float = opt(0.15, gt=0.0, lt=1.0)
    num_workers: int = opt(0, ge=0)

    def files(self) -> dict[str, str]:
        """{'all': path} or {'train': ..., 'val': ..., 'test': ...}."""
        if self.path is not None:
            return {"all": self.path}
        return {
            k: v for k, v in zip(SPLITS, (self.train_path, self.val_path, self.test_path), strict=True) if v
        }


@variant("data", "image_folder")
@dataclass(frozen=True)
class ImageFolderDataConfig:
    """Class folders of PNG/JPEG images (root/<class>/*.png), decoded once into memory at
    `image_size` x `image_size`; split by root/train|val|test subfolders or by fractions."""

    name: Literal["image_folder"]
    root: str | None = opt(None, "folder of class folders, or of train/val/test folders (required)")
    image_size: int = opt(32, "images are resized to image_size x image_size", ge=4)
    channels: Literal[1, 3] = 3
    crop_padding: int = opt(0, "random crop after zero padding by this many pixels; 0 = off", ge=0)
    hflip: bool = False
    normalize: bool = True
    mean: list[float] | None = opt(None, "per channel; null = from the train split")
    std: list[float] | None = opt(None, "per channel; null = from the train split", gt=0.0)
    max_memory_mb: int = opt(4096, "limit on the decoded images held in memory", gt=0)
    batch_size: int = opt(64, "global batch per optimizer step", gt=0)
    eval_batch_size: int = opt(256, "per-device batch for validation and test", gt=0)
    val_fraction: float = opt(0.15, gt=0.0, lt=1.0)
    test_fraction: float = opt(0.15, gt=0.0, lt=1.0)
    num_workers: int = opt(0, ge=0)


@variant("model", "vit")
@dataclass(frozen=True)
class ViTConfig:
    """Vision Transformer: patch embedding, class token, pre-norm encoder blocks."""

    family: Literal["vit"]
    patch_size: int = opt(4, "image side must be a multiple of it", gt=0)
    dim: int = opt(64, "embedding width; a multiple of heads", gt=0)
    depth: int = opt(4, gt=0)
    heads: int = opt(4, gt=0)
    mlp_ratio: float = opt(4.0, gt=0.0)
    dropout: float = opt(0.0, ge=0.0, lt=1.0)


# --------------------------------------------------------------------------- optimization


NoDecay = Literal["bias", "norm", "embedding"]
Implementation = Literal["auto", "for_loop", "foreach", "fused"]


@dataclass(frozen=True, kw_only=True)
class OptimCommon:
    """Keys every optimizer has: weight decay groups and the kernel implementation."""

    lr: float = opt(1e-3, gt=0.0)
    weight_decay: float = opt(0.0, ge=0.0)
    no_decay: list[NoDecay] = opt(["bias", "norm", "embedding"], "parameter kinds kept out of weight decay")
    implementation: Implementation = opt(
        "auto", "auto: torch's default; foreach/fused: multi-tensor or fused kernels where supported"
    )


@variant("optim", "adam", "adamw")
@dataclass(frozen=True, kw_only=True)
class AdamConfig(OptimCommon):
    name: Literal["adam", "adamw"]
    betas: list[float] = opt([0.9, 0.999], ge=0.0, lt=1.0, length=2)
    eps: float = opt(1e-8, gt=0.0)


@variant("optim", "sgd")
@dataclass(frozen=True, kw_only=True)
class SGDConfig(OptimCommon):
    name: Literal["sgd"]
    lr: float = opt(0.05, gt=0.0)
    momentum: float = opt(0.9, ge=0.0, lt=1.0)
    nesterov: bool = True


@variant("optim", "muon")
@dataclass(frozen=True, kw_only=True)
class MuonConfig(OptimCommon):
    """torch.optim.Muon on 2-D weight matrices; every other tensor goes to the fallback optimizer."""

    name: Literal["muon"]
    lr: float = opt(0.02, gt=0.0)
    momentum: float = opt(0.95, ge=0.0, lt=1.0)
    nesterov: bool = True
    ns_steps: int = opt(5, "Newton-Schulz iterations that orthogonalise the update", gt=0)
    adjust_lr: Literal["original", "match_rms_adamw"] = "match_rms_adamw"
    fallback: Literal["adamw", "adam"] = opt("adamw", "optimizer of biases, norms, embeddings, convs")
    fallback_lr: float = opt(3e-3, gt=0.0)
    betas: list[float] = opt([0.9, 0.999], ge=0.0, lt=1.0, length=2)
    eps: float = opt(1e-8, gt=0.0)


SchedInterval = Literal["step", "epoch"]


@dataclass(frozen=True, kw_only=True)
class SchedCommon:
    interval: SchedInterval = opt("step", "step: per optimizer step; epoch: once per epoch")
    warmup_steps: int = opt(0, "intervals of linear warmup; 0 uses warmup_fraction", ge=0)
    warmup_fraction: float = opt(0.0, ge=0.0, lt=1.0)
    min_lr_ratio: float = opt(0.0, "floor as a fraction of optim.lr", ge=0.0, le=1.0)


@variant("sched", "constant")
@dataclass(frozen=True, kw_only=True)
class ConstantSchedConfig(SchedCommon):
    name: Literal["constant"]


@variant("sched", "cosine")
@dataclass(frozen=True, kw_only=True)
class CosineSchedConfig(SchedCommon):
    name: Literal["cosine"]
    warmup_fraction: float = opt(0.05, ge=0.0, lt=1.0)


@variant("sched", "linear")
@dataclass(frozen=True, kw_only=True)
class LinearSchedConfig(SchedCommon):
    name: Literal["linear"]
    warmup_fraction: float = opt(0.05, ge=0.0, lt=1.0)


@variant("sched", "wsd")
@dataclass(frozen=True, kw_only=True)
class WSDSchedConfig(SchedCommon):
    """Warmup, a long stable phase at the full rate, then a short decay to the floor."""

    name: Literal["wsd"]
    warmup_fraction: float = opt(0.05, ge=0.0, lt=1.0)
    decay_fraction: float = opt(0.2, "last fraction of training spent decaying", gt=0.0, le=1.0)
    decay_shape: Literal["linear", "cosine", "sqrt"] = "sqrt"


@variant("sched", "step")
@dataclass(frozen=True, kw_only=True)
class StepSchedConfig(SchedCommon):
    name: Literal["step"]
    step_size: int = opt(100, "intervals between drops", gt=0)
    gamma: float = opt(0.1, gt=0.0, le=1.0)


@variant("sched", "exponential")
@dataclass(frozen=True, kw_only=True)
class ExponentialSchedConfig(SchedCommon):
    name: Literal["exponential"]
    gamma: float = opt(0.999, "factor per interval", gt=0.0, le=1.0)


@variant("sched", "plateau")
@dataclass(frozen=True, kw_only=True)
class PlateauSchedConfig(SchedCommon):
    """Multiply the rate by `factor` when `monitor` stops improving (checked after validation)."""

    name: Literal["plateau"]
    interval: SchedInterval = "epoch"
    monitor: str = "val/loss"
    mode: Literal["min", "max"] = "min"
    factor: float = opt(0.5, gt=0.0, lt=1.0)
    patience: int = opt(3, "validation runs without improvement before a drop", ge=0)
    threshold: float = opt(1e-4, ge=0.0)
    cooldown: int = opt(0, ge=0)


# --------------------------------------------------------------------------- optimizer tricks


@dataclass(frozen=True)
class EMAConfig:
    """Exponential moving average of the weights, used for validation, test and export."""

    enabled: bool = False
    decay: float = opt(0.999, "ema = decay * ema + (1 - decay) * weights, per optimizer step", gt=0.0, lt=1.0)
    start_step: int = opt(
        0, "optimizer steps before averaging starts (ema copies the weights until then)", ge=0
    )


@dataclass(frozen=True)
class SWAConfig:
    """Stochastic weight averaging (Lightning's callback): an equal-weight average of epoch ends."""

    enabled: bool = False
    lr: float = opt(1e-3, "learning rate held during the averaging phase", gt=0.0)
    epoch_start: float = opt(0.75, "fraction of max_epochs (< 1) or epoch number (>= 1)", gt=0.0)
    annealing_epochs: int = opt(1, ge=0)
    annealing_strategy: Literal["cos", "linear"] = "cos"


@dataclass(frozen=True)
class NonFiniteConfig:
    """What a NaN or infinite training loss does."""

    policy: Literal["stop", "skip"] = opt("stop", "stop: save and exit naming the step; skip: drop the batch")
    max_consecutive: int = opt(5, "skip: stop after this many non-finite losses in a row", gt=0)


@dataclass(frozen=True)
class LRFinderConfig:
    """Learning-rate range test: exponentially rising rate over real batches, before training."""

    enabled: bool = False
    min_lr: float = opt(1e-6, gt=0.0)
    max_lr: float = opt(1.0, gt=0.0)
    num_steps: int = opt(100, gt=1)
    apply: bool = opt(False, "train with the suggested rate instead of optim.lr")


@dataclass(frozen=True)
class BatchSizeFinderConfig:
    """Doubling search over the micro-batch: what fits in memory, and how fast each one steps."""

    enabled: bool = False
    start: int = opt(1, "first micro-batch tried", gt=0)
    max: int = opt(4096, "largest micro-batch tried", gt=0)
    steps: int = opt(3, "timed optimizer steps per size (after one untimed)", gt=0)
    speed_fraction: float = opt(
        0.9, "suggest the smallest size within this fraction of the best samples/s", gt=0.0, le=1.0
    )


@dataclass(frozen=True)
class FindersConfig:
    lr: LRFinderConfig = field(default_factory=LRFinderConfig)
    batch_size: BatchSizeFinderConfig = field(default_factory=BatchSizeFinderConfig)


@dataclass(frozen=True)
class TricksConfig:
    """Training tricks that are not the optimizer or the schedule (config group `tricks`)."""

    label_smoothing: float = opt(0.0, "cross-entropy targets (1-e) one-hot + e/classes", ge=0.0, lt=1.0)
    log_grad_norm: bool = opt(True, "log train/grad_norm (before clipping) every log_every_n_steps")
    ema: EMAConfig = field(default_factory=EMAConfig)
    swa: SWAConfig = field(default_factory=SWAConfig)
    nonfinite: NonFiniteConfig = field(default_factory=NonFiniteConfig)
    finders: FindersConfig = field(default_factory=FindersConfig)


# --------------------------------------------------------------------------- trainer and the rest

Precision = Literal["32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "64-true"]


@dataclass(frozen=True)
class TrainerConfig:
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int = opt(1, gt=0)
    num_nodes: int = opt(1, gt=0)
    precision: Precision = "32-true"
    max_epochs: int = opt(30, ge=-1)
    max_steps: int = opt(-1, ge=-1)
    accumulate_grad_batches: int = opt(1, gt=0)
    gradient_clip_val: float | None = opt(None, gt=0.0)
    gradient_clip_algorithm: Literal["norm", "value"] = "norm"
    log_every_n_steps: int = opt(10, gt=0)
    val_check_interval: float = opt(1.0, gt=0.0)
    check_val_every_n_epoch: int = opt(1, gt=0)
    limit_train_batches: float | None = opt(None, gt=0.0)
    limit_val_batches: float | None = opt(None, ge=0.0)
    limit_test_batches: float | None = opt(None, gt=0.0)
    deterministic: bool = True
    enable_progress_bar: bool = True


@variant("strategy", "auto")
@dataclass(frozen=True)
class AutoStrategyConfig:
    name: Literal["auto"]
    activation_checkpointing: bool = False
    compile: bool = False


@variant("strategy", "ddp")
@dataclass(frozen=True)
class DDPStrategyConfig:
    name: Literal["ddp"]
    find_unused_parameters: bool = False
    activation_checkpointing: bool = False
    compile: bool = False


# --------------------------------------------------------------------------- parallel strategies
# Every strategy has `activation_checkpointing` and `compile`; parallel.py applies them in one
# order (tensor parallel, activation checkpointing, compile, FSDP). See docs/parallelism.md.


@variant("strategy", "fsdp")
@dataclass(frozen=True)
class FSDPStrategyConfig:
    """FSDP2 `fully_shard`: weights, gradients and optimizer state sharded over all processes."""

    name: Literal["fsdp"]
    sharding: Literal["full", "hybrid"] = opt("full", "hybrid: shard within a node, replicate across nodes")
    cpu_offload: bool = opt(False, "keep sharded weights, gradients and optimizer state in host memory")
    reshard_after_forward: bool = opt(True, "free gathered weights after forward (ZeRO-3); false = ZeRO-2")
    activation_checkpointing: bool = False
    compile: bool = False


@variant("strategy", "tp")
@dataclass(frozen=True)
class TPStrategyConfig:
    """DTensor tensor parallel inside groups of `tensor_parallel_size` devices; data parallel across."""

    name: Literal["tp"]
    tensor_parallel_size: int = opt(2, gt=0)
    sequence_parallel: bool = opt(False, "also shard norms and residuals along the sequence (transformer)")
    activation_checkpointing: bool = False
    compile: bool = False


@variant("strategy", "fsdp_tp")
@dataclass(frozen=True)
class FSDPTPStrategyConfig:
    """2-D: tensor parallel inside groups, FSDP2 over the data-parallel dimension across groups."""

    name: Literal["fsdp_tp"]
    tensor_parallel_size: int = opt(2, gt=0)
    sequence_parallel: bool = False
    reshard_after_forward: bool = True
    activation_checkpointing: bool = False
    compile: bool = False


@variant("strategy", "deepspeed_zero2", "deepspeed_zero3")
@dataclass(frozen=True)
class DeepSpeedStrategyConfig:
    """DeepSpeed ZeRO stage 2 (optimizer state + gradients sharded) or 3 (+ weights). GPU only."""

    name: Literal["deepspeed_zero2", "deepspeed_zero3"]
    offload_optimizer: bool = False
    offload_parameters: bool = opt(False, "stage 3 only")
    activation_checkpointing: bool = False
    compile: bool = False


StrategyConfig = (
    AutoStrategyConfig
    | DDPStrategyConfig
    | FSDPStrategyConfig
    | TPStrategyConfig
    | FSDPTPStrategyConfig
    | DeepSpeedStrategyConfig
)
# Families whose tensor-parallel plan parallel.py knows (cnn has none).
TP_FAMILIES = {"mlp", "transformer"}


def tensor_parallel_size(strategy: Any) -> int:
    """Devices in one tensor-parallel group (1 when the strategy has no tensor parallel)."""
    return getattr(strategy, "tensor_parallel_size", 1)


def check_parallel(cfg: RunConfig) -> None:
    """Strategy x hardware x model checks; each raises one line naming the override to change."""
    s, t = cfg.strategy, cfg.trainer
    world = t.devices * t.num_nodes
    tp = tensor_parallel_size(s)
    if s.name in ("tp", "fsdp_tp"):
        if t.devices % tp:
            raise ConfigError(
                f"strategy.tensor_parallel_size={tp} must divide trainer.devices={t.devices} "
                f"(tensor-parallel groups stay inside a node): set strategy.tensor_parallel_size to a divisor of {t.devices}"
            )
        if cfg.model.family not in TP_FAMILIES:
            raise ConfigError(
                f"strategy={s.name} has no tensor-parallel plan for model family '{cfg.model.family}': "
                "use strategy=fsdp or strategy=ddp"
            )
        # The MLP's norms act on the hidden features that tensor parallel splits; the
        # Transformer's act on the residual stream, which every rank holds whole.
        if cfg.model.family == "mlp" and cfg.model.norm != "none":
            raise ConfigError(
                f"strategy={s.name} shards the hidden features, which model.norm={cfg.model.norm} normalises "
                "across: set model.norm=none or use strategy=fsdp"
            )
        for key in ("n_heads", "n_kv_heads"):
            heads = getattr(cfg.model, key, None)
            if heads is not None and heads % tp:
                raise ConfigError(
                    f"model.{key}={heads} is not divisible by strategy.tensor_parallel_size={tp}: "
                    f"set strategy.tensor_parallel_size to a divisor of {heads}"
                )
    if s.name == "fsdp_tp" and world // tp < 2:
        raise ConfigError(
            f"strategy=fsdp_tp needs at least 2 tensor-parallel groups but devices x nodes = {world} and "
            f"tensor_parallel_size={tp}: use strategy=tp or more devices"
        )
    if s.name == "fsdp" and s.sharding == "hybrid" and t.num_nodes < 2:
        raise ConfigError(
            "strategy.sharding=hybrid replicates across nodes but trainer.num_nodes=1: "
            "set strategy.sharding=full or trainer.num_nodes=2 (or more)"
        )
    if s.name in ("fsdp", "tp", "fsdp_tp"):
        _check_dtensor(s.name)
    if s.name.startswith("deepspeed"):
        _check_deepspeed(cfg)


def _check_dtensor(name: str) -> None:
    import importlib.util
    from pathlib import Path

    # Looked up on disk: find_spec of a submodule would import torch (seconds) just to check.
    spec = importlib.util.find_spec("torch")
    where = Path(spec.origin).parent if spec is not None and spec.origin else None
    if where is None or not (where / "distributed" / "tensor" / "__init__.py").is_file():
        raise ConfigError(
            f"strategy={name} needs a torch with DTensor (torch>=2.4 built with distributed): "
            "upgrade torch or use strategy=ddp"
        )


def _check_deepspeed(cfg: RunConfig) -> None:
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(
            f"strategy={cfg.strategy.name} needs the deepspeed package: pip install 'bigtrain[deepspeed]', "
            "or use strategy=fsdp"
        )
    if cfg.trainer.accelerator not in ("auto", "gpu", "cuda"):
        raise ConfigError(
            f"strategy={cfg.strategy.name} runs on CUDA GPUs only: set trainer.accelerator=gpu or use strategy=fsdp"
        )
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            f"strategy={cfg.strategy.name} needs a CUDA GPU and none is visible: use strategy=fsdp or strategy=ddp"
        )


# --------------------------------------------------------------------------- metrics, callbacks, loggers

# ppl and bpb are language-model metrics (perplexity, bits per byte); acc is token accuracy there.
MetricName = Literal["acc", "precision", "recall", "f1", "auroc", "ppl", "bpb"]


@dataclass(frozen=True)
class MetricsConfig:
    names: list[MetricName] = opt(["acc", "precision", "recall", "f1", "auroc"])
    train: bool = True


@dataclass(frozen=True)
class CheckpointConfig:
    monitor: str = "val/loss"
    mode: Literal["min", "max"] = "min"
    save_last: bool = True
    save_top_k: int = opt(1, ge=-1)
    every_n_train_steps: int | None = opt(None, "also save last.ckpt every N optimizer steps", gt=0)


@dataclass(frozen=True)
class EarlyStoppingConfig:
    enabled: bool = False
    patience: int = opt(5, gt=0)
    min_delta: float = opt(0.0, ge=0.0)


@dataclass(frozen=True)
class SamplesConfig:
    """Text generated from `prompt` after each validation (language models only)."""

    enabled: bool = True
    prompt: str = "def "
    max_new_tokens: int = opt(80, gt=0)
    temperature: float = opt(0.0, "0 = greedy decoding", ge=0.0)
    top_k: int | None = opt(None, gt=0)
    num_samples: int = opt(1, gt=0)


@dataclass(frozen=True)
class ThroughputConfig:
    warmup: int = opt(5, "training batches not timed at the start", ge=0)
    peak_flops: float | None = opt(None, "peak FLOP/s of one device for MFU; null = known-GPU table", gt=0.0)


@dataclass(frozen=True)
class CallbacksConfig:
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    samples: SamplesConfig = field(default_factory=SamplesConfig)
    throughput: ThroughputConfig = field(default_factory=ThroughputConfig)
    progress_bar: Literal["rich", "tqdm", "none"] = "rich"
    progress_refresh_rate: int = opt(5, "redraw the progress bar every N batches", gt=0)
    extra: list[Any] = opt([], "your own Lightning callbacks: [{_target_: pkg.Class, arg: value}]")
    model_summary_depth: int = opt(2, ge=0)
    plots: bool = True
    lr_monitor: bool = True
    print_config: bool = True


@dataclass(frozen=True)
class CSVLoggerConfig:
    flush_logs_every_n_steps: int = opt(100, gt=0)


@dataclass(frozen=True)
class TensorBoardLoggerConfig:
    log_graph: bool = False


@dataclass(frozen=True)
class MLflowLoggerConfig:
    tracking_uri: str | None = opt(None, "null = a file store in <run dir>/mlruns")
    experiment_name: str | None = opt(None, "null = the run's name")
    run_name: str | None = None


@dataclass(frozen=True)
class WandbLoggerConfig:
    project: str = opt("bigtrain", nonempty=True)
    entity: str | None = None
    run_name: str | None = None
    mode: Literal["offline", "online", "disabled"] = "offline"


@dataclass(frozen=True)
class LoggerConfig:
    csv: CSVLoggerConfig | None = None
    tensorboard: TensorBoardLoggerConfig | None = None
    mlflow: MLflowLoggerConfig | None = None
    wandb: WandbLoggerConfig | None = None


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
    tricks: TricksConfig = field(default_factory=TricksConfig)
    name: str = opt("default", nonempty=True)
    seed: int = opt(42, ge=0)
    ckpt_path: str | None = None
    dry_run: bool = False
    test_after_fit: bool = True
    resume: str | None = opt(None, "a run directory to continue (set by `bigtrain resume=DIR`)")
    trust_checkpoint: bool = opt(False, "allow checkpoints that need unpickling code to load")

    @property
    def data_parallel_size(self) -> int:
        """Processes that each see different samples: all of them, over the tensor-parallel size."""
        return self.trainer.devices * self.trainer.num_nodes // tensor_parallel_size(self.strategy)

    @property
    def micro_batch_size(self) -> int:
        """Samples per device per forward/backward pass."""
        return self.data.batch_size // (self.data_parallel_size * self.trainer.accumulate_grad_batches)


# Data sets whose samples are images (C, H, W); the others are flat feature vectors.
IMAGE_DATA = {"digits", "image_folder"}
IMAGE_MODELS = {"cnn", "vit"}


# --------------------------------------------------------------------------- the validator


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(_fmt(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _convert(value: Any, tp: Any, path: str, meta: dict) -> Any:
    """Check `value` against type `tp` and the range rules in `meta`; return the typed value."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        dataclass_args = [a for a in args if dataclasses.is_dataclass(a)]
        if dataclass_args and isinstance(value, dict):
            return _build(dataclass_args[0], value, path)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path, meta)
            except ConfigError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"{path}={_fmt(value)} is invalid: expected {_type_name(tp)}; set {path}=<value>")
    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, int) and not isinstance(value, bool) and str(value) in choices:
            value = str(value)  # trainer.precision=32 arrives from YAML as the integer 32
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f" (did you mean {path}={close[0]}?)" if close else ""
            raise ConfigError(
                f"{path}={_fmt(value)} is not valid: choose one of {', '.join(map(_fmt, choices))}{hint}"
            )
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}={_fmt(value)} must be a list, e.g. {path}=[1,2]")
        if meta.get("nonempty") and not value:
            raise ConfigError(f"{path} must not be empty; set {path}=[...] with at least one value")
        if "length" in meta and len(value) != meta["length"]:
            raise ConfigError(f"{path} must have exactly {meta['length']} values; got {len(value)}")
        (item_tp,) = typing.get_args(tp)
        return [_convert(v, item_tp, f"{path}[{i}]", meta) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a group of keys, not {_fmt(value)}")
        return _build(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}={_fmt(value)} must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ConfigError(f"{path}={_fmt(value)} must be an integer")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}={_fmt(value)} must be a number")
        value = float(value)
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}={_fmt(value)} must be a string")
        if meta.get("nonempty") and not value:
            raise ConfigError(f"{path} must not be empty")
        return value
    _check_range(value, path, meta)
    return value


def _check_range(value: Any, path: str, meta: dict) -> None:
    for key, op, words in (
        ("gt", lambda a, b: a > b, "greater than"),
        ("ge", lambda a, b: a >= b, "at least"),
        ("lt", lambda a, b: a < b, "less than"),
        ("le", lambda a, b: a <= b, "at most"),
    ):
        if key in meta and not op(value, meta[key]):
            raise ConfigError(f"{path}={_fmt(value)} is out of range: it must be {words} {meta[key]}")


def _build(cls: type, data: dict, path: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            full = f"{path}.{key}" if path else key
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"did you mean {path + '.' if path else ''}{close[0]}? " if close else ""
            raise ConfigError(
                f"unknown key '{full}': {hint}valid keys{' of ' + path if path else ''}: {', '.join(fields)}"
            )
    kwargs = {}
    for name, f in fields.items():
        full = f"{path}.{name}" if path else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"missing key '{full}': add {full}=<value>")
            continue
        kwargs[name] = _convert(data[name], hints[name], full, dict(f.metadata))
    return cls(**kwargs)


def _variant(section: str, data: Any) -> Any:
    key, options = VARIANTS[section]
    if not isinstance(data, dict) or key not in data:
        raise ConfigError(f"{section}.{key} is missing: choose {section}=<option> (see bigtrain --help)")
    choice = data[key]
    if choice not in options:
        close = difflib.get_close_matches(str(choice), list(options), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(
            f"{section}.{key}={_fmt(choice)} is not supported{hint}: known {key}s are {', '.join(options)}"
        )
    return _build(options[choice], data, section)


def from_dict(raw: dict) -> RunConfig:
    """Validate a plain (resolved) config dict and return the typed RunConfig."""
    raw = dict(raw)
    raw.pop("hydra", None)
    sections: dict[str, Any] = {}
    for section in VARIANTS:
        if section not in raw:
            raise ConfigError(f"config group '{section}' is missing: add {section}=<option>")
        sections[section] = _variant(section, raw.pop(section))
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = [k for k in raw if k not in fields]
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(fields), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(f"unknown key '{unknown[0]}': {hint}top-level keys: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(RunConfig)
    kwargs: dict[str, Any] = dict(sections)
    for f in dataclasses.fields(RunConfig):
        if f.name in sections or f.name not in raw:
            if (
                f.name not in sections
                and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING
            ):
                raise ConfigError(f"config group '{f.name}' is missing: add {f.name}=<option>")
            continue
        kwargs[f.name] = _convert(raw[f.name], hints[f.name], f.name, dict(f.metadata))
    cfg = RunConfig(**kwargs)
    check_combinations(cfg)
    return cfg


# --------------------------------------------------------------------------- combinations

# Checks of other areas (reliability, clusters) register here: each takes the RunConfig and
# raises ConfigError.
EXTRA_CHECKS: list = []


def _check_language_models(cfg: RunConfig) -> None:
    """LM data goes with the transformer and LM metrics; shapes must divide evenly."""
    is_lm_data, m = cfg.data.name in LM_DATA, cfg.model
    if is_lm_data and m.family not in LM_MODELS:
        raise ConfigError(
            f"data={cfg.data.name} is token data but model={m.family}/*: use model=gpt/tiny (or llama/*)"
        )
    if not is_lm_data and m.family in LM_MODELS:
        raise ConfigError(
            f"model={m.family} needs token data but data={cfg.data.name}: use data=stdlib_text, text or tokens"
        )
    if not is_lm_data:
        bad = [n for n in cfg.metrics.names if n in ("ppl", "bpb")]
        if bad:
            raise ConfigError(f"metrics.names has {bad[0]}, a language-model metric: use metrics=default")
        return
    bad = [n for n in cfg.metrics.names if n not in ("acc", "ppl", "bpb")]
    if bad:
        raise ConfigError(f"metrics.names has {bad[0]}, a classification metric: use metrics=lm")
    if m.d_model % m.n_heads:
        raise ConfigError(
            f"model.d_model={m.d_model} is not divisible by model.n_heads={m.n_heads}: set model.n_heads to a divisor"
        )
    if m.n_heads % m.kv_heads:
        raise ConfigError(
            f"model.n_heads={m.n_heads} is not divisible by model.n_kv_heads={m.kv_heads}: set model.n_kv_heads to a divisor"
        )
    if m.positions == "rope" and m.head_dim % 2:
        raise ConfigError(
            f"RoPE needs an even head size, got {m.head_dim}: change model.n_heads or model.d_model"
        )
    if cfg.data.seq_len > m.max_seq_len:
        raise ConfigError(
            f"data.seq_len={cfg.data.seq_len} is longer than model.max_seq_len={m.max_seq_len}: lower data.seq_len"
        )
    _check_lm_files(cfg.data)


def _check_lm_files(d: Any) -> None:
    import glob
    import importlib.util

    if d.name == "text":
        if not d.paths:
            raise ConfigError("data=text needs input files: set data.paths=[file.txt,folder/,'docs/*.md']")
        for p in d.paths:
            if not (os.path.exists(p) or glob.glob(p, recursive=True)):
                raise ConfigError(f"data.paths: {p} matches no file: give existing files, folders or globs")
    if d.name == "tokens":
        base = d.path[: -len(".json")] if d.path.endswith(".json") else d.path.removesuffix(".bin")
        for ext in (".bin", ".json"):
            if not os.path.isfile(base + ext):
                raise ConfigError(
                    f"data.path={d.path}: {base + ext} not found; write it with bigtrain-tokens write"
                )
    if getattr(d, "tokenizer", None) is not None:
        if importlib.util.find_spec("tokenizers") is None:
            raise ConfigError("data.tokenizer needs the tokenizers package: pip install 'bigtrain[text]'")
        if not os.path.isfile(d.tokenizer):
            raise ConfigError(f"data.tokenizer={d.tokenizer} does not exist: give a tokenizers JSON file")


EXTRA_CHECKS.append(_check_language_models)


def check_combinations(cfg: RunConfig) -> None:
    """Checks across groups; each failure names the override that fixes it."""
    t = cfg.trainer
    check_parallel(cfg)  # first: the data-parallel size below needs a valid tensor-parallel size
    per_step = cfg.data_parallel_size * t.accumulate_grad_batches
    if cfg.data.batch_size % per_step:
        tp = tensor_parallel_size(cfg.strategy)
        over_tp = f" / tensor_parallel_size {tp}" if tp > 1 else ""
        raise ConfigError(
            f"data.batch_size={cfg.data.batch_size} (the global batch) is not divisible by "
            f"devices x nodes{over_tp} x accumulation = {t.devices} x {t.num_nodes}{over_tp} x "
            f"{t.accumulate_grad_batches} = {per_step}; set data.batch_size to a multiple of {per_step}"
        )
    if cfg.model.family in IMAGE_MODELS and cfg.data.name not in IMAGE_DATA:
        raise ConfigError(
            f"model={cfg.model.family}/* needs image data but data={cfg.data.name} gives flat features; "
            f"use data=digits or a model=mlp/* preset"
        )
    if t.max_epochs == -1 and t.max_steps == -1:
        raise ConfigError("training would never stop: set trainer.max_epochs or trainer.max_steps")
    if cfg.strategy.name == "ddp" and cfg.data_parallel_size == 1:
        raise ConfigError("strategy=ddp needs more than one process: set trainer.devices=2 (or more)")
    if cfg.strategy.name == "auto" and t.devices > 1 and t.accelerator in ("cpu",):
        raise ConfigError(
            f"trainer.devices={t.devices} on CPU needs a multi-process strategy: add strategy=ddp"
        )
    monitor = cfg.callbacks.checkpoint.monitor
    valid = {f"val/{m}" for m in (*cfg.metrics.names, "loss")} | {"train/loss"}
    if monitor not in valid:
        close = difflib.get_close_matches(monitor, sorted(valid), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(
            f"callbacks.checkpoint.monitor={monitor} is never logged{hint}: choose one of {', '.join(sorted(valid))}"
        )
    # A sharded checkpoint (strategy=fsdp/tp/fsdp_tp) is a directory with a meta.pt inside.
    is_sharded = cfg.ckpt_path is not None and os.path.isfile(os.path.join(cfg.ckpt_path, "meta.pt"))
    if cfg.ckpt_path is not None and not (os.path.isfile(cfg.ckpt_path) or is_sharded):
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path} does not exist: give the path of a .ckpt file, or drop ckpt_path"
        )
    if is_sharded and cfg.strategy.name not in ("fsdp", "tp", "fsdp_tp"):
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path} is a sharded checkpoint, which strategy={cfg.strategy.name} cannot "
            "load: add strategy=fsdp (any number of devices), or export it with python -m bigtrain.runs.export"
        )
    _check_hardware(cfg)
    for check in EXTRA_CHECKS:
        check(cfg)


def check_user_data(cfg: RunConfig) -> None:
    """Files, columns and shapes of user data and models, checked before anything is built.
    Lists image folders (no image is opened) and reads user tables with numpy (see
    data/tables.py): a table's data errors need its values, and it is read once per process."""
    d, m = cfg.data, cfg.model
    if isinstance(d, TabularDataConfig):
        _check_table(d, cfg.seed)
    if isinstance(d, ImageFolderDataConfig):
        _check_image_root(d)
        if d.mean is not None and len(d.mean) != d.channels:
            raise ConfigError(f"data.mean needs {d.channels} values (one per channel); got {len(d.mean)}")
        if d.std is not None and len(d.std) != d.channels:
            raise ConfigError(f"data.std needs {d.channels} values (one per channel); got {len(d.std)}")
    side = {"digits": 8, "image_folder": getattr(d, "image_size", 0)}.get(d.name)
    if isinstance(m, CNNConfig) and side and side < 2 ** len(m.channels):
        # Each conv block halves the side: n blocks need a side of at least 2^n.
        raise ConfigError(
            f"{len(m.channels)} CNN blocks halve {side}x{side} images below 1x1: use at most "
            f"{side.bit_length() - 1} model.channels, or a larger data.image_size"
        )
    if isinstance(m, ViTConfig):
        if m.dim % m.heads:
            raise ConfigError(
                f"model.dim={m.dim} is not divisible by model.heads={m.heads}: change one of them"
            )
        if side and side % m.patch_size:
            raise ConfigError(
                f"model.patch_size={m.patch_size} does not divide the {side}x{side} images: "
                f"choose a divisor of {side}"
                + (" or change data.image_size" if d.name == "image_folder" else "")
            )
    for name, package in (("mlflow", "mlflow"), ("wandb", "wandb")):
        if getattr(cfg.logger, name) is not None and importlib.util.find_spec(package) is None:
            raise ConfigError(
                f"logger.{name} needs the {package} package: pip install 'bigtrain[{name}]', or drop logger.{name}"
            )


def _check_table(d: TabularDataConfig, seed: int) -> None:
    from bigtrain.data.tables import load_table, read_header

    split_paths = [d.train_path, d.val_path, d.test_path]
    if d.path is not None and any(split_paths):
        raise ConfigError("set either data.path or data.train_path/val_path/test_path, not both")
    if d.path is None and not all(split_paths):
        if not any(split_paths):
            raise ConfigError(
                "data=csv needs a file: set data.path=FILE (or data.train_path, val_path and test_path)"
            )
        missing = [f"data.{k}_path" for k, v in zip(SPLITS, split_paths, strict=True) if not v]
        raise ConfigError(f"separate split files need all three: set {', '.join(missing)}")
    if d.split_column is not None and d.path is None:
        raise ConfigError(
            "data.split_column applies to one file (data.path): drop it for separate split files"
        )
    if d.target is None:
        raise ConfigError("data=csv needs the label column: set data.target=COLUMN")
    for split_name, path in d.files().items():
        key = "data.path" if split_name == "all" else f"data.{split_name}_path"
        columns = read_header(path, key)
        wanted = [("data.target", d.target)]
        wanted += [("data.split_column", d.split_column)] if d.split_column else []
        wanted += [("data.features", c) for c in d.features or []]
        wanted += [("data.categorical", c) for c in d.categorical]
        for option, column in wanted:
            if column not in columns:
                close = difflib.get_close_matches(column, columns, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise ConfigError(
                    f"{option}: column '{column}' is not in {key}={path}{hint}; its columns are {', '.join(columns)}"
                )
    if d.features is not None and d.target in d.features:
        raise ConfigError(f"data.features lists the target '{d.target}': remove it from data.features")
    stray = [c for c in d.categorical if d.features is not None and c not in d.features]
    if stray:
        raise ConfigError(f"data.categorical column '{stray[0]}' is not in data.features: add it there too")
    if d.target in d.categorical:
        raise ConfigError(f"data.categorical lists the target '{d.target}': remove it")
    # Reads and encodes the table now (numpy only), so errors in the data come before a run
    # directory exists; the data module reuses the result.
    load_table(d, seed)


def _check_image_root(d: ImageFolderDataConfig) -> None:
    if d.root is None:
        raise ConfigError("data=image_folder needs a folder: set data.root=DIR (class folders inside)")
    if not os.path.isdir(d.root):
        raise ConfigError(f"data.root={d.root} is not a folder: give the folder that holds the class folders")
    if os.path.isdir(os.path.join(d.root, "train")):
        missing = [s for s in SPLITS if not os.path.isdir(os.path.join(d.root, s))]
        if missing:
            raise ConfigError(
                f"data.root={d.root} has a train/ folder but no {'/, '.join(missing)}/: add it, "
                "or put the class folders directly in data.root to split by fractions"
            )
        folders = [os.path.join(d.root, s) for s in SPLITS]
    else:
        folders = [d.root]
    for folder in folders:
        classes = [e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")]
        if len(classes) < 2:
            raise ConfigError(
                f"{folder} holds {len(classes)} class folder(s): image_folder needs at least 2 (root/<class>/*.png)"
            )


EXTRA_CHECKS.append(check_user_data)


# --------------------------------------------------------------------------- reliability


def _check_checkpoint_inputs(cfg: RunConfig) -> None:
    """ckpt_path must be an intact checkpoint that loads without running pickled code.

    torch is imported only when a checkpoint is given: it is the only way to know."""
    if cfg.resume is not None and cfg.ckpt_path is not None:
        raise ConfigError(
            f"resume={cfg.resume} and ckpt_path={cfg.ckpt_path} both say where to start: drop ckpt_path "
            "(resume picks the newest intact checkpoint of the run)"
        )
    if cfg.ckpt_path is not None:
        from bigtrain.runs.checkpointing import CheckpointError, inspect_checkpoint

        try:
            inspect_checkpoint(cfg.ckpt_path, trust=cfg.trust_checkpoint)
        except CheckpointError as e:
            raise ConfigError(f"ckpt_path={cfg.ckpt_path}: {e}") from e


EXTRA_CHECKS.append(_check_checkpoint_inputs)


def _check_hardware(cfg: RunConfig) -> None:
    """Device checks; torch is imported only when the config asks for a GPU or GPU-only precision."""
    t = cfg.trainer
    wants_gpu = t.accelerator in ("gpu", "cuda")
    if not wants_gpu and t.precision != "16-mixed" and t.accelerator != "mps":
        return
    import torch

    if t.accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            "trainer.accelerator=mps but this machine has no Apple GPU: use trainer.accelerator=cpu"
        )
    if wants_gpu:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(
                f"trainer.accelerator={t.accelerator} but no CUDA GPU is visible: use trainer.accelerator=cpu "
                "(or auto), or run on a machine with a GPU"
            )
        if t.devices > count:
            raise ConfigError(
                f"trainer.devices={t.devices} but only {count} GPU(s) are visible: set trainer.devices={count}"
            )
    if t.precision == "16-mixed" and t.accelerator in ("cpu",):
        raise ConfigError(
            "trainer.precision=16-mixed needs a GPU: on CPU use trainer.precision=bf16-mixed or 32-true"
        )
    if t.precision == "16-mixed" and t.accelerator == "auto" and not torch.cuda.is_available():
        raise ConfigError(
            "trainer.precision=16-mixed needs a GPU and none is visible: use trainer.precision=bf16-mixed or 32-true"
        )


def validate(cfg: Any) -> RunConfig:
    """Validate a Hydra DictConfig: resolve interpolations, then check it against the schemas."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        raw = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        raise ConfigError(f"cannot resolve '{key}': {str(e).splitlines()[0]}") from e
    return from_dict(raw)


def as_dict(cfg: RunConfig) -> dict:
    """Plain nested dict of a RunConfig (for logging as hyperparameters and plan.json)."""
    return dataclasses.asdict(cfg)


# --------------------------------------------------------------------------- optimizer tricks: checks


def check_optimizer_tricks(cfg: RunConfig) -> None:
    """Schedules, optimizer implementations and tricks that only work in some combinations."""
    s, t, k = cfg.sched, cfg.trainer, cfg.tricks
    if s.interval == "epoch" and t.max_epochs == -1:
        raise ConfigError(
            "sched.interval=epoch counts epochs but trainer.max_epochs=-1: set trainer.max_epochs "
            "or sched.interval=step"
        )
    if s.name == "plateau":
        valid = {f"val/{m}" for m in (*cfg.metrics.names, "loss")}
        if s.monitor not in valid:
            close = difflib.get_close_matches(s.monitor, sorted(valid), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(
                f"sched.monitor={s.monitor} is never logged{hint}: choose one of {', '.join(sorted(valid))}"
            )
        if s.warmup_steps or s.warmup_fraction:
            raise ConfigError(
                "sched=plateau has no warmup: set sched.warmup_steps=0 and sched.warmup_fraction=0"
            )
        if t.limit_val_batches == 0:
            raise ConfigError("sched=plateau needs validation but trainer.limit_val_batches=0: drop it")
    if cfg.optim.implementation == "fused" and cfg.optim.name == "muon":
        raise ConfigError("optim=muon has no fused kernel: set optim.implementation=auto or foreach")
    if cfg.optim.implementation == "fused" and t.precision == "16-mixed" and t.gradient_clip_val:
        raise ConfigError(
            "a fused optimizer unscales fp16 gradients itself, so Lightning cannot clip them: "
            "set optim.implementation=foreach or drop trainer.gradient_clip_val"
        )
    if k.ema.enabled and k.swa.enabled:
        raise ConfigError("tricks.ema and tricks.swa both average weights: enable only one of them")
    if k.swa.enabled:
        if t.max_epochs == -1:
            raise ConfigError("tricks.swa averages epoch ends and needs trainer.max_epochs: set it")
        if k.swa.epoch_start >= 1 and k.swa.epoch_start > t.max_epochs:
            raise ConfigError(
                f"tricks.swa.epoch_start={k.swa.epoch_start:g} is after the last epoch ({t.max_epochs}): "
                "set it below trainer.max_epochs or as a fraction < 1"
            )
    if k.nonfinite.policy == "skip" and cfg.data_parallel_size > 1:
        raise ConfigError(
            "tricks.nonfinite.policy=skip drops a batch on one process, which DDP cannot do: "
            "use tricks.nonfinite.policy=stop with more than one device"
        )
    f = k.finders
    if (f.lr.enabled or f.batch_size.enabled) and cfg.data_parallel_size > 1:
        raise ConfigError(
            "the finders measure one device before training: run them with trainer.devices=1 "
            "(and num_nodes=1), then set the values they suggest"
        )
    if f.lr.min_lr >= f.lr.max_lr:
        raise ConfigError(
            f"tricks.finders.lr.min_lr={f.lr.min_lr:g} must be below max_lr={f.lr.max_lr:g}: lower min_lr"
        )
    if f.batch_size.start > f.batch_size.max:
        raise ConfigError(
            f"tricks.finders.batch_size.start={f.batch_size.start} is above max={f.batch_size.max}: lower start"
        )


EXTRA_CHECKS.append(check_optimizer_tricks)


# Key names that look like credentials: never sent to a logger or tracking server.
SECRET_WORDS = ("token", "password", "passwd", "secret", "api_key", "apikey", "credential", "private_key")


def strip_secrets(value: Any) -> Any:
    """`value` without dict keys that look like secrets (at any depth), for logging."""
    if isinstance(value, dict):
        return {
            k: strip_secrets(v)
            for k, v in value.items()
            if not any(w in str(k).lower().replace("-", "_") for w in SECRET_WORDS)
        }
    if isinstance(value, (list, tuple)):
        return type(value)(strip_secrets(v) for v in value)
    return value
