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


# --------------------------------------------------------------------------- optimization


@variant("optim", "adam", "adamw")
@dataclass(frozen=True)
class AdamConfig:
    name: Literal["adam", "adamw"]
    lr: float = opt(1e-3, gt=0.0)
    weight_decay: float = opt(0.0, ge=0.0)
    betas: list[float] = opt([0.9, 0.999], ge=0.0, lt=1.0, length=2)
    eps: float = opt(1e-8, gt=0.0)


@variant("optim", "sgd")
@dataclass(frozen=True)
class SGDConfig:
    name: Literal["sgd"]
    lr: float = opt(0.05, gt=0.0)
    momentum: float = opt(0.9, ge=0.0, lt=1.0)
    nesterov: bool = True
    weight_decay: float = opt(0.0, ge=0.0)


@variant("sched", "constant")
@dataclass(frozen=True)
class ConstantSchedConfig:
    name: Literal["constant"]
    warmup_steps: int = opt(0, ge=0)


@variant("sched", "cosine")
@dataclass(frozen=True)
class CosineSchedConfig:
    name: Literal["cosine"]
    warmup_steps: int = opt(0, "optimizer steps of linear warmup; 0 uses warmup_fraction", ge=0)
    warmup_fraction: float = opt(0.05, ge=0.0, lt=1.0)
    min_lr_ratio: float = opt(0.0, ge=0.0, le=1.0)


# --------------------------------------------------------------------------- optimizer tricks


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


@variant("strategy", "ddp")
@dataclass(frozen=True)
class DDPStrategyConfig:
    name: Literal["ddp"]
    find_unused_parameters: bool = False


# --------------------------------------------------------------------------- parallel strategies


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
class LoggerConfig:
    csv: CSVLoggerConfig | None = None
    tensorboard: TensorBoardLoggerConfig | None = None


@dataclass(frozen=True)
class RunConfig:
    """The whole validated run: what builders receive."""

    data: SklearnDataConfig | TextDataConfig | TokensDataConfig
    model: MLPConfig | CNNConfig | TransformerConfig
    optim: AdamConfig | SGDConfig
    sched: ConstantSchedConfig | CosineSchedConfig
    trainer: TrainerConfig
    strategy: AutoStrategyConfig | DDPStrategyConfig
    metrics: MetricsConfig
    callbacks: CallbacksConfig
    logger: LoggerConfig
    name: str = opt("default", nonempty=True)
    seed: int = opt(42, ge=0)
    ckpt_path: str | None = None
    dry_run: bool = False
    test_after_fit: bool = True

    @property
    def data_parallel_size(self) -> int:
        return self.trainer.devices * self.trainer.num_nodes

    @property
    def micro_batch_size(self) -> int:
        """Samples per device per forward/backward pass."""
        return self.data.batch_size // (self.data_parallel_size * self.trainer.accumulate_grad_batches)


# Data sets whose samples are images (C, H, W); the others are flat feature vectors.
IMAGE_DATA = {"digits"}
IMAGE_MODELS = {"cnn"}


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
    per_step = cfg.data_parallel_size * t.accumulate_grad_batches
    if cfg.data.batch_size % per_step:
        raise ConfigError(
            f"data.batch_size={cfg.data.batch_size} (the global batch) is not divisible by "
            f"devices x nodes x accumulation = {t.devices} x {t.num_nodes} x {t.accumulate_grad_batches} = {per_step}; "
            f"set data.batch_size to a multiple of {per_step}"
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
    if cfg.ckpt_path is not None and not os.path.isfile(cfg.ckpt_path):
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path} does not exist: give the path of a .ckpt file, or drop ckpt_path"
        )
    _check_hardware(cfg)
    for check in EXTRA_CHECKS:
        check(cfg)


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
