"""A small keyword-spotting conv net on log-mel spectrograms (1, n_mels, frames).

Per entry of `channels`, a 3x3 conv (padding 1), a layer norm over the block's channels and
positions, ReLU and a 2x2 max-pool (40 bands x 101 frames -> 20x50 -> 10x25 -> 5x12 for three
blocks); then the maximum over what is left of time and frequency, dropout and one linear layer.
The maximum makes it indifferent to where in the clip the word falls, and ignores the silence
that pads short words (a mean over the clip learned about three times slower on spoken digits).
A per-sample layer norm
(GroupNorm with one group) rather than batch norm: the statistics of a sample do not depend on
which samples share its micro-batch, so 1 and N processes train the same model.
"""

from __future__ import annotations

import torch
from torch import nn

from bigtrain.config.schema_models import KWSCNNConfig


class KWSCNN(nn.Module):
    def __init__(self, cfg: KWSCNNConfig, input_shape: tuple[int, ...], num_outputs: int) -> None:
        super().__init__()
        self.config = cfg
        in_ch, bands, frames = input_shape
        layers: list[nn.Module] = []
        for out_ch in cfg.channels:
            if bands < 2 or frames < 2:
                raise ValueError(
                    f"{len(cfg.channels)} pooling blocks shrink {input_shape[1:]} log-mels below 1x1: "
                    "use fewer model.channels"
                )
            layers.append(
                nn.Sequential(
                    nn.Conv2d(in_ch, out_ch, 3, padding=1),
                    nn.GroupNorm(1, out_ch),
                    nn.ReLU(),
                    nn.MaxPool2d(2),
                )
            )
            in_ch, bands, frames = out_ch, bands // 2, frames // 2
        self.blocks = nn.Sequential(*layers)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(in_ch, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.blocks(x).amax(dim=(2, 3))))


# --------------------------------------------------------------------------- the family's parts
# (models/family.py): how to build it, its blocks and FSDP units; it has no tensor-parallel plan.


def build(cfg: KWSCNNConfig, input_shape: tuple[int, ...], num_outputs: int) -> KWSCNN:
    return KWSCNN(cfg, input_shape, num_outputs)


def blocks(model: nn.Module) -> list[str]:
    """Each conv block: one activation-checkpointing, compile and FSDP unit (the head stays with
    the root)."""
    return [f"blocks.{i}" for i in range(len(model.blocks))]


fsdp_units = blocks
