"""Parallelism applied to a plain model from outside, in one place and one order:

1. tensor parallel (DTensor): each family's plan shards its Linears inside a tensor-parallel group;
2. activation checkpointing: each block's activations are recomputed in the backward pass;
3. torch.compile: each block is compiled in place (names and state dict keys unchanged);
4. FSDP2 (`fully_shard`): one unit per block, then the root, over the data-parallel mesh.

The order matters: TP must see the original Linears; checkpointing and compile wrap whole blocks
after TP has replaced their weights by DTensors; FSDP goes last so that its all-gathers happen
around the (checkpointed, compiled) blocks and it shards the TP shards again (2-D).

The models never know they are sharded. What this file knows about each family is where its
blocks are and which Linears split column-wise or row-wise (`FAMILIES`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

# --------------------------------------------------------------------------- family knowledge


def _mlp_linears(model: nn.Module) -> list[str]:
    # After activation checkpointing `body` is a wrapper; its layers keep their names.
    body = getattr(model.body, "_checkpoint_wrapped_module", model.body)
    names = [f"body.{i}" for i, m in enumerate(body) if isinstance(m, nn.Linear)]
    return [*names, "head"]


def mlp_tp_plan(model: nn.Module, sequence_parallel: bool = False) -> dict[str, Any]:
    """Consecutive Linears in pairs: the first column-wise (each rank computes a slice of the hidden
    features; the activation between them is elementwise, so it runs on the slice), the second
    row-wise (each rank multiplies its slice; one all-reduce sums the partial outputs). With an odd
    number of Linears the last one stays replicated: it gets full inputs and computes full outputs."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    names = _mlp_linears(model)
    plan: dict[str, Any] = {}
    for first, second in zip(names[0::2], names[1::2], strict=False):  # odd: last one left out
        plan[first] = ColwiseParallel()
        plan[second] = RowwiseParallel()
    return plan


def transformer_tp_plan(model: nn.Module, sequence_parallel: bool = False) -> dict[str, Any]:
    """Megatron-style: wqkv, w1, w3 column-wise (whole key/value groups of heads and hidden units
    split; wqkv's rows are grouped so that a contiguous slice is whole groups), wo and w2
    row-wise (one all-reduce per attention and per MLP). The embedding is split over the vocabulary
    and the head over its outputs, unless the two share one weight: then both stay replicated.

    With `sequence_parallel`, the norms and the residual stream between blocks hold 1/tp of the
    sequence (Shard(1)): the all-reduces become reduce-scatter + all-gather, and the norms'
    activations shrink by tp. Assumes each Block takes the residual stream as its one input."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        RowwiseParallel,
        SequenceParallel,
    )

    sp = sequence_parallel
    between = Shard(1) if sp else Replicate()  # layout of the residual stream between blocks
    plan: dict[str, Any] = {}
    tied = model.head.weight is model.tok_emb.weight
    if not tied:
        plan["tok_emb"] = RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate())
        plan["head"] = ColwiseParallel(input_layouts=between, output_layouts=Replicate())
    elif sp:
        plan["head"] = PrepareModuleInput(
            input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),), use_local_output=True
        )
    if sp:
        # Embeddings (token + position) are added full-length; the first block takes its slice.
        plan["blocks.0"] = PrepareModuleInput(
            input_layouts=(Replicate(),), desired_input_layouts=(Shard(1),), use_local_output=True
        )
        plan["norm_f"] = SequenceParallel()
    for i, block in enumerate(model.blocks):
        p = f"blocks.{i}."
        for name in ("attn.wqkv", "mlp.w1"):
            plan[p + name] = ColwiseParallel()
        if getattr(block.mlp, "w3", None) is not None:
            plan[p + "mlp.w3"] = ColwiseParallel()
        plan[p + "attn.wo"] = RowwiseParallel(output_layouts=between)
        plan[p + "mlp.w2"] = RowwiseParallel(output_layouts=between)
        if sp:
            # Norms run on the local slice of the sequence; attention and MLP need all of it.
            plan[p + "norm1"] = SequenceParallel(use_local_output=True)
            plan[p + "norm2"] = SequenceParallel(use_local_output=True)
            for sub in ("attn", "mlp"):
                plan[p + sub] = PrepareModuleInput(
                    input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),), use_local_output=True
                )
    return plan


def _unwrapped(name: str) -> str:
    """A module's name as before activation checkpointing (the wrapper forwards attributes)."""
    return name.replace("_checkpoint_wrapped_module.", "")


@dataclass(frozen=True)
class Family:
    """Where a family's blocks are (checkpointing, compile), its FSDP units, and its TP plan."""

    blocks: Callable[[nn.Module], list[str]]
    fsdp_units: Callable[[nn.Module], list[str]]
    tp_plan: Callable[[nn.Module, bool], dict[str, Any]] | None


FAMILIES: dict[str, Family] = {
    # The MLP's body is one Sequential: checkpoint and compile it as one block; shard per Linear.
    "mlp": Family(lambda m: ["body"], _mlp_linears, mlp_tp_plan),
    "cnn": Family(
        lambda m: ["features"],
        lambda m: [_unwrapped(n) for n, x in m.named_modules() if isinstance(x, (nn.Conv2d, nn.Linear))],
        None,
    ),
    "transformer": Family(
        lambda m: [f"blocks.{i}" for i in range(len(m.blocks))],
        lambda m: [f"blocks.{i}" for i in range(len(m.blocks))],
        transformer_tp_plan,
    ),
}


def family_of(model: nn.Module) -> Family:
    return FAMILIES[model.config.family]


# --------------------------------------------------------------------------- the four steps


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, leaf, new)


def apply_tp(model: nn.Module, tp_mesh: Any, sequence_parallel: bool = False) -> None:
    from torch.distributed.tensor.parallel import parallelize_module

    plan = family_of(model).tp_plan
    if plan is None:
        raise ValueError(f"model family {model.config.family!r} has no tensor-parallel plan")
    parallelize_module(model, tp_mesh, plan(model, sequence_parallel))


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Wrap each block: the backward recomputes the block's forward instead of storing its
    intermediate activations (memory per block: its input only; compute: one more forward)."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    for name in family_of(model).blocks(model):
        _replace(model, name, checkpoint_wrapper(model.get_submodule(name), preserve_rng_state=True))


def apply_compile(model: nn.Module) -> None:
    """Compile each block in place: same module objects and state dict keys; blocks of one
    family share code, so dynamo compiles one and reuses it."""
    for name in family_of(model).blocks(model):
        model.get_submodule(name).compile()


def apply_fsdp(model: nn.Module, mesh: Any, *, reshard_after_forward: bool, cpu_offload: bool) -> None:
    """One FSDP2 unit per block (its weights are gathered just before it runs and freed after),
    and the root for what is left (embeddings, head, norms)."""
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

    offload = CPUOffloadPolicy() if cpu_offload else OffloadPolicy()
    for name in family_of(model).fsdp_units(model):
        fully_shard(
            model.get_submodule(name),
            mesh=mesh,
            reshard_after_forward=reshard_after_forward,
            offload_policy=offload,
        )
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard_after_forward, offload_policy=offload)


def _materialize(model: nn.Module, device: torch.device) -> None:
    """Models built on the meta device get storage only now, after sharding (each rank allocates
    its shards only), then their own initialisation."""
    if not any(p.is_meta for p in model.parameters()):
        return
    model.to_empty(device=device)
    if hasattr(model, "init_weights"):
        model.init_weights()
    else:
        for m in model.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()


# --------------------------------------------------------------------------- entry point


def parallelize(
    model: nn.Module, strategy: Any, mesh: Any = None, device: Any = None, num_nodes: int = 1
) -> nn.Module:
    """Apply `strategy` (a validated strategy config) to `model` in place; returns it.

    `mesh` is Lightning's 2-D device mesh ("data_parallel", "tensor_parallel") for fsdp, tp and
    fsdp_tp; None for auto, ddp and deepspeed (Lightning wraps those itself; only activation
    checkpointing and compile apply)."""
    name = strategy.name
    if name in ("tp", "fsdp_tp") and mesh["tensor_parallel"].size() > 1:
        apply_tp(model, mesh["tensor_parallel"], strategy.sequence_parallel)
    if strategy.activation_checkpointing:
        apply_activation_checkpointing(model)
    if strategy.compile:
        apply_compile(model)
    if name in ("fsdp", "fsdp_tp"):
        apply_fsdp(
            model,
            _fsdp_mesh(strategy, mesh, num_nodes),
            reshard_after_forward=strategy.reshard_after_forward,
            cpu_offload=getattr(strategy, "cpu_offload", False),
        )
    if device is not None:
        _materialize(model, torch.device(device))
    return model


def _fsdp_mesh(strategy: Any, mesh: Any, num_nodes: int) -> Any:
    """The data-parallel mesh; for hybrid sharding reshaped to (nodes, devices per node): FSDP2
    shards inside a node (fast links) and replicates across nodes (one all-reduce of shards)."""
    dp = mesh["data_parallel"]
    if getattr(strategy, "sharding", "full") != "hybrid":
        return dp
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(
        dp.device_type, (num_nodes, dp.size() // num_nodes), mesh_dim_names=("replicate", "shard")
    )


def data_parallel_group(mesh: Any) -> Any:
    """The process group of this rank's data-parallel replicas (None: the whole world). Metrics
    sync over it so that the tensor-parallel copies of one batch are counted once."""
    if mesh is None or mesh["tensor_parallel"].size() == 1:
        return None
    return mesh["data_parallel"].get_group()


def tp_sharded_params(model: nn.Module) -> int:
    """Parameters that tensor parallel splits (the Linears and embeddings the family's plan shards;
    row-wise biases are counted too, a rounding error). Used by the plan's memory figures."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    plan_fn = family_of(model).tp_plan
    if plan_fn is None:
        return 0
    plan = plan_fn(model, False)
    return sum(
        p.numel()
        for name, style in plan.items()
        if isinstance(style, (ColwiseParallel, RowwiseParallel))
        for p in model.get_submodule(name).parameters()
    )
