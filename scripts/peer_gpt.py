"""nanoGPT's way of writing a GPT, in plain torch: the model of the peer competitors.

One module with a fused q/k/v projection (`c_attn`), exact GELU, LayerNorm with biases, learned
positions, a head tied to the token embedding and dropout modules. Nothing here imports
bigtrain or Lightning (until `load_from` copies a bigtrain model's weights), so the start-up
peers (startup_peers.py) import only what such a script imports.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.heads, self.dropout = heads, dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))


class FeedForward(nn.Module):
    def __init__(self, d: int, dropout: float) -> None:
        super().__init__()
        self.c_fc, self.c_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class PeerBlock(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.ln_1, self.attn = nn.LayerNorm(d), SelfAttention(d, heads, dropout)
        self.ln_2, self.mlp = nn.LayerNorm(d), FeedForward(d, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class PeerGPT(nn.Module):
    """GPT-2's shape in one file; `load_from` copies a bigtrain Transformer of the same shape."""

    def __init__(self, vocab: int, seq_len: int, layers: int, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(seq_len, d)
        self.drop = nn.Dropout(dropout)
        self.h = nn.ModuleList(PeerBlock(d, heads, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.size(1), dtype=torch.long, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))

    @torch.no_grad()
    def load_from(self, theirs: nn.Module) -> None:
        """Copy the weights of a bigtrain Transformer (learned positions, tied, GELU MLP)."""
        from bigtrain.models.transformer import split_qkv

        self.wte.weight.copy_(theirs.tok_emb.weight)
        self.wpe.weight.copy_(theirs.pos_emb.weight[: self.wpe.num_embeddings])
        for mine, block in zip(self.h, theirs.blocks, strict=True):
            a = block.attn  # wqkv's rows grouped by head, c_attn's q | k | v
            mine.attn.c_attn.weight.copy_(torch.cat(split_qkv(a.wqkv.weight, a.n_heads, a.kv_heads)))
            mine.attn.c_attn.bias.copy_(torch.cat(split_qkv(a.wqkv.bias, a.n_heads, a.kv_heads)))
            pairs = [(mine.attn.c_proj, a.wo), (mine.mlp.c_fc, block.mlp.w1), (mine.mlp.c_proj, block.mlp.w2)]
            pairs += [(mine.ln_1, block.norm1), (mine.ln_2, block.norm2)]
            for dst, src in pairs:
                dst.weight.copy_(src.weight)
                dst.bias.copy_(src.bias)
        self.ln_f.weight.copy_(theirs.norm_f.weight)
        self.ln_f.bias.copy_(theirs.norm_f.bias)
