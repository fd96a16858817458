"""A multilayer perceptron: Flatten, then (Linear, norm, activation, dropout) per hidden width,
then one Linear head. For binary tasks the head has one unit and the loss applies the sigmoid
(BCEWithLogits), which is both faster and numerically safer than a Sigmoid layer + BCELoss."""

from __future__ import annotations

import math

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
