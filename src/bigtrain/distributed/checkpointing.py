"""Activation checkpointing of one block, full or selective, through torch.utils.checkpoint.

A checkpointed block keeps its class's behaviour, names and state-dict keys: its class becomes a
subclass whose forward runs the original one under `torch.utils.checkpoint.checkpoint` (the
way FSDP2's `fully_shard` gives a module a class of its own). Blocks of one class share one
checkpointed class, so torch.compile of one is reused by the others.

Full: the block keeps only its inputs; the backward recomputes all of its forward.
Selective (torch's selective-checkpoint API, `create_selective_checkpoint_contexts`): the block
also keeps the outputs of attention and of every other matrix multiply, in the order they run,
and recomputes the rest (norms, activations, the other matmuls). That is torchtitan's "op" mode:
the matmuls that are kept are the ones whose recomputation would cost the most compute per byte
saved, and alternating halves the memory of keeping them all. For the transformer's block the
kept matmuls are wqkv, w1 and w2 (wo and w3 are recomputed); models/shapes.py counts their bytes.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn


def _ops(*names: str) -> frozenset:
    """The aten overloads of `names` that this torch has (attention kernels differ by version)."""
    found = set()
    for name in names:
        packet = getattr(torch.ops.aten, name, None)
        if packet is not None and hasattr(packet, "default"):
            found.add(packet.default)
    return frozenset(found)


MATMULS = _ops("mm", "addmm")
ATTENTION = _ops(
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_flash_attention_for_cpu",
)


def selective_contexts() -> Any:
    """A fresh pair of selective-checkpoint contexts for one call of a block: a matmul is kept
    when it is the 1st, 3rd, 5th... of the block's forward (counted again, the same way, in the
    recomputation), attention always, anything else recomputed."""
    from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

    counts = {False: 0, True: 0}

    def policy(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
        if op in MATMULS:
            counts[ctx.is_recompute] += 1
            keep = counts[ctx.is_recompute] % 2 == 1
            return CheckpointPolicy.MUST_SAVE if keep else CheckpointPolicy.PREFER_RECOMPUTE
        if op in ATTENTION:
            return CheckpointPolicy.MUST_SAVE
        return CheckpointPolicy.PREFER_RECOMPUTE

    return create_selective_checkpoint_contexts(policy)


@functools.cache
def checkpointed_class(cls: type, selective: bool) -> type:
    """`cls` with its forward run under activation checkpointing."""
    from torch.utils.checkpoint import checkpoint

    options: dict[str, Any] = {"use_reentrant": False, "preserve_rng_state": True}
    if selective:
        options["context_fn"] = selective_contexts

    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        return checkpoint(cls.forward, self, *args, **options, **kwargs)

    kind = "Selective" if selective else "Checkpointed"
    return type(f"{kind}{cls.__name__}", (cls,), {"forward": forward, "__module__": cls.__module__})


def checkpoint_block(block: nn.Module, selective: bool = False) -> None:
    """Make `block` checkpoint its forward, in place (once: a checkpointed block is left as it is)."""
    if getattr(type(block), "checkpointed", False):
        return
    cls = checkpointed_class(type(block), selective)
    cls.checkpointed = True
    block.__class__ = cls
