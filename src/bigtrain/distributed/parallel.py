"""Parallelism applied to a plain model from outside, in one place and one order:

1. tensor parallel (DTensor): each family's plan shards its Linears inside a tensor-parallel group;
2. activation checkpointing: blocks (all, every K-th, or selectively) recompute in the backward;
3. torch.compile: each block is compiled in place (names and state dict keys unchanged);
4. FSDP2 (`fully_shard`): one unit per block, then the root, over the data-parallel mesh, with a
   mixed-precision policy (bf16 gathers, fp32 gradient reduction) under bf16-mixed.

The order matters: TP must see the original Linears; checkpointing and compile wrap whole blocks
after TP has replaced their weights by DTensors; FSDP goes last so that its all-gathers happen
around the (checkpointed, compiled) blocks and it shards the TP shards again (2-D).

The models never know they are sharded. Where a family's blocks are and which Linears split
column-wise or row-wise is the family's own (models/<family>.py: blocks, fsdp_units, tp_plan, as
its record in models/family.py says); this file applies them in order.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def family_of(model: nn.Module) -> Any:
    """The torch parts of `model`'s family (models/family.py): blocks, fsdp_units, tp_plan."""
    from bigtrain.models.family import of

    return of(model).parts()


# --------------------------------------------------------------------------- the four steps


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, leaf, new)


def apply_tp(model: nn.Module, tp_mesh: Any, sequence_parallel: bool = False) -> None:
    from torch.distributed.tensor.parallel import parallelize_module

    parts = family_of(model)
    if not hasattr(parts, "tp_plan"):
        raise ValueError(f"model family {model.config.family!r} has no tensor-parallel plan")
    parallelize_module(model, tp_mesh, parts.tp_plan(model, sequence_parallel))


def apply_activation_checkpointing(model: nn.Module, plan: Any = None) -> None:
    """Checkpoint blocks as `plan` (config.Checkpointing; default: every block, fully) says: the
    backward recomputes a block's forward instead of keeping its intermediate tensors (memory per
    block: its input only; compute: one more forward). `selective` keeps what the costly ops
    return (see checkpointing.py); `every_n:K` checkpoints blocks 0, K, 2K, ..."""
    from bigtrain.config import Checkpointing
    from bigtrain.distributed.checkpointing import checkpoint_block

    plan = plan or Checkpointing("full", 1)
    for i, name in enumerate(family_of(model).blocks(model)):
        if i % plan.every == 0:
            checkpoint_block(model.get_submodule(name), selective=plan.mode == "selective")


def apply_compile(model: nn.Module) -> None:
    """Compile each block in place: same module objects and state dict keys; blocks of one
    family share code, so dynamo compiles one and reuses it."""
    for name in family_of(model).blocks(model):
        model.get_submodule(name).compile()


def apply_fsdp(
    model: nn.Module,
    mesh: Any,
    *,
    reshard_after_forward: bool,
    cpu_offload: bool,
    param_dtype: str | None = None,
    reduce_dtype: str = "float32",
) -> None:
    """One FSDP2 unit per block (its weights are gathered just before it runs and freed after),
    and the root for what is left (embeddings, head, norms). With `param_dtype` (bfloat16 under
    bf16-mixed) each unit gathers its weights in that dtype, the blocks compute in it, and
    gradients are reduce-scattered in `reduce_dtype` into the float32 shards the optimizer keeps."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    offload = CPUOffloadPolicy() if cpu_offload else OffloadPolicy()
    if param_dtype is None and reduce_dtype == "float32":
        mixed = MixedPrecisionPolicy()  # the parameters' own dtype throughout
    else:
        mixed = MixedPrecisionPolicy(
            param_dtype=getattr(torch, param_dtype) if param_dtype else None,
            reduce_dtype=getattr(torch, reduce_dtype),
        )
    units = [*(model.get_submodule(n) for n in family_of(model).fsdp_units(model)), model]
    for unit in units:
        fully_shard(
            unit,
            mesh=mesh,
            reshard_after_forward=reshard_after_forward,
            offload_policy=offload,
            mp_policy=mixed,
        )


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
    model: nn.Module,
    strategy: Any,
    mesh: Any = None,
    device: Any = None,
    num_nodes: int = 1,
    precision: str = "32-true",
) -> nn.Module:
    """Apply `strategy` (a validated strategy config) to `model` in place; returns it.

    `mesh` is Lightning's 2-D device mesh ("data_parallel", "tensor_parallel") for fsdp, tp and
    fsdp_tp; None for auto, ddp and deepspeed (Lightning wraps those itself; only activation
    checkpointing and compile apply). `precision` (trainer.precision) picks FSDP's gathered
    dtype where strategy.param_dtype is auto."""
    from bigtrain.config import checkpointing, gathered_dtype

    name = strategy.name
    if name in ("tp", "fsdp_tp") and mesh["tensor_parallel"].size() > 1:
        apply_tp(model, mesh["tensor_parallel"], strategy.sequence_parallel)
    plan = checkpointing(strategy)
    if plan.on:
        apply_activation_checkpointing(model, plan)
    if strategy.compile:
        apply_compile(model)
    if name in ("fsdp", "fsdp_tp"):
        apply_fsdp(
            model,
            _fsdp_mesh(strategy, mesh, num_nodes),
            reshard_after_forward=strategy.reshard_after_forward,
            cpu_offload=getattr(strategy, "cpu_offload", False),
            param_dtype=gathered_dtype(strategy, precision),
            reduce_dtype=strategy.reduce_dtype,
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

    parts = family_of(model)
    if not hasattr(parts, "tp_plan"):
        return 0
    plan = parts.tp_plan(model, False)
    return sum(
        p.numel()
        for name, style in plan.items()
        if isinstance(style, (ColwiseParallel, RowwiseParallel))
        for p in model.get_submodule(name).parameters()
    )
