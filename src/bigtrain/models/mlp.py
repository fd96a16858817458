"""A multilayer perceptron: Flatten, then (Linear, norm, activation, dropout) per hidden width,
then one Linear head. For binary tasks the head has one unit and the loss applies the sigmoid
(BCEWithLogits), which is both faster and numerically safer than a Sigmoid layer + BCELoss."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from bigtrain.config import MLPConfig

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


class MLP(nn.Module):
    def __init__(self, cfg: MLPConfig, input_shape: tuple[int, ...], num_outputs: int) -> None:
        super().__init__()
        self.config = cfg
        width = math.prod(input_shape)  # 8x8 digits arrive as (1, 8, 8): 64 inputs
        layers: list[nn.Module] = [nn.Flatten()]
        for hidden in cfg.hidden:
            layers.append(nn.Linear(width, hidden))
            if cfg.norm == "batch":
                layers.append(nn.BatchNorm1d(hidden))
            elif cfg.norm == "layer":
                layers.append(nn.LayerNorm(hidden))
            layers.append(ACTIVATIONS[cfg.activation]())
            if cfg.dropout > 0:
                layers.append(nn.Dropout(cfg.dropout))
            width = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


# --------------------------------------------------------------------------- the family's parts
# (models/family.py): how to build it, its blocks and FSDP units, its tensor-parallel plan.


def build(cfg: MLPConfig, input_shape: tuple[int, ...], num_outputs: int) -> MLP:
    return MLP(cfg, input_shape, num_outputs)


def blocks(model: nn.Module) -> list[str]:
    """The body is one Sequential: checkpointed and compiled as one block."""
    return ["body"]


def fsdp_units(model: nn.Module) -> list[str]:
    """One FSDP unit per Linear (the norms and activations between them hold no or few weights);
    activation checkpointing keeps `body` and its layers' names."""
    names = [f"body.{i}" for i, m in enumerate(model.body) if isinstance(m, nn.Linear)]
    return [*names, "head"]


def tp_plan(model: nn.Module, sequence_parallel: bool = False) -> dict[str, Any]:
    """Consecutive Linears in pairs: the first column-wise (each rank computes a slice of the hidden
    features; the activation between them is elementwise, so it runs on the slice), the second
    row-wise (each rank multiplies its slice; one all-reduce sums the partial outputs). With an odd
    number of Linears the last one stays replicated: it gets full inputs and computes full outputs."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    names = fsdp_units(model)
    plan: dict[str, Any] = {}
    for first, second in zip(names[0::2], names[1::2], strict=False):  # odd: last one left out
        plan[first] = ColwiseParallel()
        plan[second] = RowwiseParallel()
    return plan
