"""A small conv net for small images: per entry of `channels`, a 3x3 conv (padding 1), ReLU and a
2x2 max-pool that halves height and width (8x8 -> 4x4 -> 2x2 for two blocks on digits); then
flatten, one hidden dense layer and the head.

Larger images (a folder of 64x64 or 224x224 images) would leave large maps after the blocks and
a dense layer of millions of weights, so maps larger than `pooled_size` are average-pooled to
`pooled_size` x `pooled_size` first (224x224, 2 blocks: 56x56x64 -> 4x4x64 = 1024 inputs)."""

from __future__ import annotations

import torch
from torch import nn

from bigtrain.config import CNNConfig


class CNN(nn.Module):
    def __init__(self, cfg: CNNConfig, input_shape: tuple[int, ...], num_outputs: int) -> None:
        super().__init__()
        self.config = cfg
        in_ch, height, width = input_shape
        blocks: list[nn.Module] = []
        for out_ch in cfg.channels:
            if height < 2 or width < 2:
                raise ValueError(
                    f"{len(cfg.channels)} pooling blocks shrink {input_shape[1:]} images below 1x1: "
                    "use fewer model.channels"
                )
            blocks += [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            in_ch, height, width = out_ch, height // 2, width // 2
        self.features = nn.Sequential(*blocks)
        # Kept apart from `features` (and an Identity when not needed) so checkpoint keys of
        # small-image models do not change.
        side = (min(height, cfg.pooled_size), min(width, cfg.pooled_size))
        self.pool = nn.AdaptiveAvgPool2d(side) if side != (height, width) else nn.Identity()
        height, width = side
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_ch * height * width, cfg.hidden),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, num_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


# --------------------------------------------------------------------------- the family's parts
# (models/family.py): how to build it, its blocks and FSDP units; it has no tensor-parallel plan.


def build(cfg: CNNConfig, input_shape: tuple[int, ...], num_outputs: int) -> CNN:
    return CNN(cfg, input_shape, num_outputs)


def blocks(model: nn.Module) -> list[str]:
    """The conv stack is one Sequential: checkpointed and compiled as one block."""
    return ["features"]


def fsdp_units(model: nn.Module) -> list[str]:
    """One FSDP unit per conv and Linear (activation checkpointing keeps their names)."""
    return [n for n, x in model.named_modules() if isinstance(x, (nn.Conv2d, nn.Linear))]
