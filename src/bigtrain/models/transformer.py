"""A decoder-only Transformer: GPT-2/3 and LLaMA are presets of this one class.

    tokens -> tok_emb (+ pos_emb) -> dropout -> blocks x n_layers -> norm_f -> head -> logits
    Block: x + attn(norm1(x)), then x + mlp(norm2(x))        (pre-norm, as GPT-2 and LLaMA)

Options (TransformerConfig): LayerNorm or RMSNorm, GELU (exact or GPT-2's tanh approximation) or
SwiGLU MLP, learned or rotary positions, tied or untied embeddings, biases on or off, dropout,
grouped-query attention. models/hf.py maps these names to and from Hugging Face's GPT-2 and LLaMA.

Names are part of the contract with tensor-parallel plans: tok_emb, pos_emb, blocks[i].{norm1,
attn.{wq,wk,wv,wo}, norm2, mlp.{w1,w2,w3}}, norm_f, head. Attention reshapes with -1 heads, so a
rank that holds a shard of wq/wk/wv (a slice of the heads) runs the same code unchanged.

Large presets are built on the meta device and materialised where they live:
    with torch.device("meta"): model = Transformer(cfg, vocab)
    model.to_empty(device="cuda"); model.init_weights()
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bigtrain.config import TransformerConfig
from bigtrain.models import shapes


class RMSNorm(nn.Module):
    """x / rms(x) * weight (no mean subtraction, no bias), computed in float32 for stability."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).type_as(x)


def make_norm(cfg: TransformerConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return RMSNorm(cfg.d_model, cfg.norm_eps)
    return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.bias)


def rope_tables(head_dim: int, seq_len: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape (seq_len, head_dim): pair i of a head turns at theta^(-2i/head_dim)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)  # halves layout: dims i and i + head_dim/2 pair up
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, T, H, D) queries or keys by position; cos/sin are (T, D)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    cos, sin = cos[:, None, :].to(x.dtype), sin[:, None, :].to(x.dtype)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        d, hd = cfg.d_model, cfg.head_dim
        self.head_dim = hd
        self.wq = nn.Linear(d, cfg.n_heads * hd, bias=cfg.bias)
        self.wk = nn.Linear(d, cfg.kv_heads * hd, bias=cfg.bias)
        self.wv = nn.Linear(d, cfg.kv_heads * hd, bias=cfg.bias)
        self.wo = nn.Linear(cfg.n_heads * hd, d, bias=cfg.bias)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        B, T, _ = x.shape
        # -1 heads: under tensor parallelism this rank's wq holds only its share of the heads.
        q = self.wq(x).view(B, T, -1, self.head_dim)
        k = self.wk(x).view(B, T, -1, self.head_dim)
        v = self.wv(x).view(B, T, -1, self.head_dim)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, D)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            is_causal=True,
            dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=k.shape[1] != q.shape[1],  # each KV head serves n_heads / n_kv_heads queries
        )
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    """GELU: w2(gelu(w1 x)), exact (`gelu`) or GPT-2's tanh approximation (`gelu_tanh`).
    SwiGLU: w2(silu(w1 x) * w3 x), w3 being the gate's second branch."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.swiglu = cfg.mlp == "swiglu"
        self.approximate = "tanh" if cfg.mlp == "gelu_tanh" else "none"
        self.w1 = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=cfg.bias)
        self.w2 = nn.Linear(cfg.ffn_dim, cfg.d_model, bias=cfg.bias)
        if self.swiglu:
            self.w3 = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.swiglu:
            return self.w2(F.silu(self.w1(x)) * self.w3(x))
        return self.w2(F.gelu(self.w1(x), approximate=self.approximate))


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.norm1 = make_norm(cfg)
        self.attn = Attention(cfg)
        self.norm2 = make_norm(cfg)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), rope))
        return x + self.drop(self.mlp(self.norm2(x)))


class Transformer(nn.Module):
    def __init__(self, cfg: TransformerConfig, vocab_size: int) -> None:
        super().__init__()
        self.config, self.vocab_size = cfg, vocab_size
        self.tok_emb = nn.Embedding(vocab_size, cfg.d_model)
        if cfg.positions == "learned":
            self.pos_emb = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm_f = make_norm(cfg)
        self.head = nn.Linear(cfg.d_model, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.tok_emb.weight
        if cfg.positions == "rope":
            # Not persistent: recomputed by init_weights, so meta-built models and old checkpoints
            # need nothing from the state dict.
            self.register_buffer("rope_cos", torch.empty(cfg.max_seq_len, cfg.head_dim), persistent=False)
            self.register_buffer("rope_sin", torch.empty(cfg.max_seq_len, cfg.head_dim), persistent=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """(Re)initialise every parameter and buffer: N(0, 0.02) for matrices and embeddings,
        residual outputs (wo, w2) scaled by 1/sqrt(2 n_layers) (GPT-2: two residual additions per
        block keep the residual stream's variance from growing with depth), zero biases, unit norms."""
        if self.tok_emb.weight.is_meta:
            return  # shapes only: values come with to_empty() + init_weights() where the model lives
        cfg = self.config
        resid_std = 0.02 / math.sqrt(2 * cfg.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = resid_std if name.endswith(("attn.wo", "mlp.w2")) else 0.02
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            elif isinstance(module, (nn.LayerNorm, RMSNorm)):
                nn.init.ones_(module.weight)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        if cfg.positions == "rope":
            cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta, device=self.rope_cos.device)
            self.rope_cos.copy_(cos)
            self.rope_sin.copy_(sin)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, T, vocab) logits."""
        T = tokens.shape[1]
        x = self.tok_emb(tokens)
        rope = None
        if self.config.positions == "learned":
            x = x + self.pos_emb(torch.arange(T, device=tokens.device))
        else:
            rope = (self.rope_cos[:T], self.rope_sin[:T])
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, rope)
        return self.head(self.norm_f(x))


# --------------------------------------------------------------------------- cost arithmetic
# The formulas live in models/shapes.py (the plan uses them without torch); here they apply to a
# built model.


def matmul_params(model: Transformer) -> int:
    """Weights that take part in a matmul per token, counted on the model: every nn.Linear, the
    head included (tied or not)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


def flops_per_token(model: Transformer, seq_len: int) -> int:
    """Training FLOPs per token, 6 N + 12 L d T (shapes.flops_per_token)."""
    return shapes.flops_per_token(model.config, model.vocab_size, seq_len)


def activation_bytes(
    model: Transformer, micro_batch: int, seq_len: int, precision: str, checkpointed: bool
) -> int:
    """Activation memory of one micro-batch (shapes.activation_bytes)."""
    return shapes.activation_bytes(
        model.config, model.vocab_size, micro_batch, seq_len, precision, checkpointed
    )
