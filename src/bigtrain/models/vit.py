"""A Vision Transformer (Dosovitskiy et al., 2020) for small images, in plain torch.

An image (C, H, W) is cut into (H/p) x (W/p) patches of p x p pixels; one strided conv embeds each
patch into `dim` values (the same as a linear layer on the flattened C*p*p patch). A learned class
token is prepended and learned position embeddings added; `depth` pre-norm encoder blocks follow
(x + attn(norm(x)), then x + mlp(norm(x))), and the head reads the class token after a final norm.
32x32 images with p=4 give 64 patches + 1 class token = 65 positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bigtrain.config import ViTConfig


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        # (B, N, 3D) -> 3 x (B, heads, N, D/heads)
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        # Not causal: every patch attends to every patch and to the class token.
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        hidden = int(cfg.dim * cfg.mlp_ratio)
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.attn = Attention(cfg.dim, cfg.heads, cfg.dropout)
        self.norm2 = nn.LayerNorm(cfg.dim)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.dim, hidden), nn.GELU(), nn.Linear(hidden, cfg.dim), nn.Dropout(cfg.dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, cfg: ViTConfig, input_shape: tuple[int, ...], num_outputs: int) -> None:
        super().__init__()
        self.config = cfg
        channels, height, width = input_shape
        p = cfg.patch_size
        if height % p or width % p:
            raise ValueError(f"model.patch_size={p} does not divide {height}x{width} images")
        if cfg.dim % cfg.heads:
            raise ValueError(f"model.dim={cfg.dim} is not divisible by model.heads={cfg.heads}")
        positions = (height // p) * (width // p) + 1  # patches + the class token
        self.patch_embed = nn.Conv2d(channels, cfg.dim, kernel_size=p, stride=p)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, positions, cfg.dim))
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.Sequential(*(Block(cfg) for _ in range(cfg.depth)))
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, num_outputs)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # std 0.02 truncated normal for embeddings and linear weights, as ViT and BERT initialise.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, dim, H/p, W/p) -> (B, N, dim)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.blocks(self.drop(x + self.pos_embed))
        return self.head(self.norm(x[:, 0]))


# --------------------------------------------------------------------------- the family's parts
# (models/family.py): how to build it, its blocks and FSDP units; it has no tensor-parallel plan.


def build(cfg: ViTConfig, input_shape: tuple[int, ...], num_outputs: int) -> ViT:
    return ViT(cfg, input_shape, num_outputs)


def blocks(model: nn.Module) -> list[str]:
    """Each encoder block: one activation-checkpointing, compile and FSDP unit (the patch
    embedding, class token, positions, final norm and head stay with the root)."""
    return [f"blocks.{i}" for i in range(len(model.blocks))]


fsdp_units = blocks
