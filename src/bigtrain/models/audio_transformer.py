"""An audio Transformer on log-mel spectrograms, for keywords (one label per clip) or
transcripts (CTC: a character distribution per token).

With `stem_channels` > 0, a 3x3 conv with that many channels, GELU and a max-pool that halves the
bands come first: a speaker's pitch and formants move a word's pattern along the mel axis, and
the conv sees it wherever it is (on spoken digits it cut the held-out voices' CER about a fifth
for the same training time). Then the (stem's) spectrogram is cut along time into patches of `patch_frames` frames x
every mel band; one strided conv embeds each patch into `dim` values (a linear layer on the
flattened n_mels*patch_frames patch), so token t covers frames [t*p, (t+1)*p): with a 10 ms hop
and p=4 a token is 40 ms, and a 3-second clip (301 frames) is 75 tokens. Learned positions are
added, and `depth` of the ViT's pre-norm encoder blocks follow (models/vit.py: the same blocks,
so activation checkpointing, compile and FSDP treat them alike). A final norm, then:
- classify: the mean of the tokens -> a linear layer (num_outputs logits);
- ctc: a linear layer on every token -> (B, tokens, labels) logits, label 0 the CTC blank.
Strips over every band keep one token per time step, which is what a CTC head needs.
"""

from __future__ import annotations

import torch
from torch import nn

from bigtrain.config.schema_models import AudioTransformerConfig
from bigtrain.models.vit import Block


class AudioTransformer(nn.Module):
    def __init__(self, cfg: AudioTransformerConfig, input_shape: tuple[int, ...], num_outputs: int) -> None:
        super().__init__()
        self.config = cfg
        channels, bands, frames = input_shape
        p = cfg.patch_frames
        if frames < p:
            raise ValueError(f"model.patch_frames={p} is longer than the {frames} frames of a clip")
        if cfg.dim % cfg.heads:
            raise ValueError(f"model.dim={cfg.dim} is not divisible by model.heads={cfg.heads}")
        tokens = frames // p  # the last frames % p frames are left out
        self.stem: nn.Module = nn.Identity()
        if cfg.stem_channels:
            self.stem = nn.Sequential(
                nn.Conv2d(channels, cfg.stem_channels, 3, padding=1), nn.GELU(), nn.MaxPool2d((2, 1))
            )
            channels, bands = cfg.stem_channels, bands // 2
        self.patch_embed = nn.Conv2d(channels, cfg.dim, kernel_size=(bands, p), stride=(bands, p))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, cfg.dim))
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.Sequential(*(Block(cfg) for _ in range(cfg.depth)))
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, num_outputs)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # std 0.02 truncated normal for positions and linear weights, as the ViT initialises.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (
            self.patch_embed(self.stem(x)).flatten(2).transpose(1, 2)
        )  # (B, dim, 1, tokens) -> (B, tokens, dim)
        x = self.norm(self.blocks(self.drop(x + self.pos_embed)))
        if self.config.head == "ctc":
            return self.head(x)  # (B, tokens, labels)
        return self.head(x.mean(dim=1))


# --------------------------------------------------------------------------- the family's parts
# (models/family.py): how to build it, its blocks and FSDP units; it has no tensor-parallel plan.


def build(cfg: AudioTransformerConfig, input_shape: tuple[int, ...], num_outputs: int) -> AudioTransformer:
    return AudioTransformer(cfg, input_shape, num_outputs)


def blocks(model: nn.Module) -> list[str]:
    """Each encoder block: one activation-checkpointing, compile and FSDP unit (the patch
    embedding, positions, final norm and head stay with the root)."""
    return [f"blocks.{i}" for i in range(len(model.blocks))]


fsdp_units = blocks
