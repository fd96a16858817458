"""Schemas of `strategy`: how a run is spread over processes, and what each strategy can set.

Every strategy has `activation_checkpointing` and `compile`; distributed/parallel.py applies them
in one order (tensor parallel, activation checkpointing, compile, FSDP). See docs/parallelism.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from bigtrain.config.convert import opt, variant
from bigtrain.config.errors import ConfigError, fmt

CHECKPOINTING_DOC = "full | selective | none | every_n:K (true = full, false = none)"
# FSDP2's MixedPrecisionPolicy dtypes: `auto` gathers parameters in the dtype trainer.precision
# computes in (bf16-mixed: bfloat16, 16-mixed: float16, otherwise none: the parameters' own).
ParamDtype = Literal["auto", "bfloat16", "float16", "float32"]
ReduceDtype = Literal["float32", "bfloat16", "float16"]


def checkpointing_mode(value: Any, path: str = "strategy.activation_checkpointing") -> str:
    """`value` as `full`, `selective`, `none` or `every_n:K`; true is full and false none."""
    if value is True:
        return "full"
    if value is False:
        return "none"
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("full", "selective", "none"):
            return word
        head, _, k = word.partition(":")
        if head == "every_n" and k.isdigit() and int(k) >= 1:
            return f"every_n:{int(k)}"
    raise ConfigError(
        f"{path}={fmt(value)} is not valid: choose full (every block), selective (save matmuls and "
        "attention, recompute the rest), none, or every_n:K (every K-th block, e.g. every_n:2)"
    )


@dataclass(frozen=True)
class Checkpointing:
    """What `strategy.activation_checkpointing` asks: `mode` full, selective or none, applied to
    blocks 0, every, 2 x every, ..."""

    mode: str
    every: int

    @property
    def on(self) -> bool:
        return self.mode != "none"

    def share(self, n_blocks: int) -> int:
        """How many of `n_blocks` blocks are checkpointed."""
        return 0 if not self.on else -(-n_blocks // self.every)


def checkpointing(strategy: Any) -> Checkpointing:
    """The strategy's activation checkpointing as a record (every_n:K is full on every K-th block)."""
    mode = checkpointing_mode(strategy.activation_checkpointing)
    if mode.startswith("every_n:"):
        return Checkpointing("full", int(mode.partition(":")[2]))
    return Checkpointing(mode, 1)


def ac_field() -> Any:
    return opt(CHECKPOINTING_DOC, parse=checkpointing_mode)


@variant("strategy", "auto")
@dataclass(frozen=True)
class AutoStrategyConfig:
    """One process; Lightning picks the device."""

    name: Literal["auto"]
    activation_checkpointing: Any = ac_field()
    compile: bool


@variant("strategy", "ddp")
@dataclass(frozen=True)
class DDPStrategyConfig:
    """Data parallel: one process per device, gradients all-reduced."""

    name: Literal["ddp"]
    find_unused_parameters: bool
    activation_checkpointing: Any = ac_field()
    compile: bool


@variant("strategy", "fsdp")
@dataclass(frozen=True)
class FSDPStrategyConfig:
    """FSDP2 `fully_shard`: weights, gradients and optimizer state sharded over all processes."""

    name: Literal["fsdp"]
    sharding: Literal["full", "hybrid"] = opt("hybrid: shard within a node, replicate across nodes")
    cpu_offload: bool = opt("keep sharded weights, gradients and optimizer state in host memory")
    reshard_after_forward: bool = opt("free gathered weights after forward (ZeRO-3); false = ZeRO-2")
    param_dtype: ParamDtype = opt("dtype parameters are gathered and computed in (auto: the precision's)")
    reduce_dtype: ReduceDtype = opt("dtype gradients are reduced in")
    activation_checkpointing: Any = ac_field()
    compile: bool


@variant("strategy", "tp")
@dataclass(frozen=True)
class TPStrategyConfig:
    """DTensor tensor parallel inside groups of `tensor_parallel_size` devices; data parallel across."""

    name: Literal["tp"]
    tensor_parallel_size: int = opt(gt=0)
    sequence_parallel: bool = opt("also shard norms and residuals along the sequence (transformer)")
    activation_checkpointing: Any = ac_field()
    compile: bool


@variant("strategy", "fsdp_tp")
@dataclass(frozen=True)
class FSDPTPStrategyConfig:
    """2-D: tensor parallel inside groups, FSDP2 over the data-parallel dimension across groups."""

    name: Literal["fsdp_tp"]
    tensor_parallel_size: int = opt(gt=0)
    sequence_parallel: bool
    reshard_after_forward: bool
    param_dtype: ParamDtype = opt("dtype parameters are gathered and computed in (auto: the precision's)")
    reduce_dtype: ReduceDtype = opt("dtype gradients are reduced in")
    activation_checkpointing: Any = ac_field()
    compile: bool


@variant("strategy", "deepspeed_zero2", "deepspeed_zero3")
@dataclass(frozen=True)
class DeepSpeedStrategyConfig:
    """DeepSpeed ZeRO stage 2 (optimizer state + gradients sharded) or 3 (+ weights). GPU only."""

    name: Literal["deepspeed_zero2", "deepspeed_zero3"]
    offload_optimizer: bool
    offload_parameters: bool = opt("stage 3 only")
    activation_checkpointing: Any = ac_field()
    compile: bool


StrategyConfig = (
    AutoStrategyConfig
    | DDPStrategyConfig
    | FSDPStrategyConfig
    | TPStrategyConfig
    | FSDPTPStrategyConfig
    | DeepSpeedStrategyConfig
)


def tensor_parallel_size(strategy: Any) -> int:
    """Devices in one tensor-parallel group (1 when the strategy has no tensor parallel)."""
    return getattr(strategy, "tensor_parallel_size", 1)


def gathered_dtype(strategy: Any, precision: str) -> str | None:
    """The dtype FSDP gathers parameters in and the blocks compute in (None: the parameters' own,
    no MixedPrecisionPolicy), for fsdp and fsdp_tp."""
    choice = getattr(strategy, "param_dtype", None)
    if choice is None:
        return None
    if choice == "auto":
        return {"bf16-mixed": "bfloat16", "16-mixed": "float16"}.get(precision)
    return None if choice == "float32" else choice
