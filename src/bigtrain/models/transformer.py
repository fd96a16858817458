"""A decoder-only Transformer: GPT-2/3 and LLaMA are presets of this one class.

    tokens -> tok_emb (+ pos_emb) -> dropout -> blocks x n_layers -> norm_f -> head -> logits
    Block: x + attn(norm1(x)), then x + mlp(norm2(x))        (pre-norm, as GPT-2 and LLaMA)

Options (TransformerConfig): LayerNorm or RMSNorm, GELU (exact or GPT-2's tanh approximation) or
SwiGLU MLP, learned or rotary positions, tied or untied embeddings, biases on or off, dropout,
grouped-query attention. models/hf.py maps these names to and from Hugging Face's GPT-2 and LLaMA.

Names are part of the contract with tensor-parallel plans: tok_emb, pos_emb, blocks[i].{norm1,
attn.{wqkv,wo}, norm2, mlp.{w1,w2,w3}}, norm_f, head.

q, k and v come from one matmul (`wqkv`), its output rows grouped by key/value head: for each
of the n_kv_heads groups, that group's n_heads / n_kv_heads query heads, then its key head, then
its value head (Megatron's layout). A contiguous slice of the rows is then whole groups, so
tensor parallelism splits wqkv column-wise like any Linear and Attention reshapes with -1
groups: a rank holding a shard runs the same code unchanged. fuse_qkv / split_qkv convert from
and to separate q, k, v weights (Hugging Face layouts, checkpoints saved before the fusion).

Generation (callbacks/samples.py) can keep each layer's keys and values (KVCache): forward_cached
runs the prompt once, then one token at a time against the cache. It mirrors forward, which
training uses and which it leaves untouched; can_cache says whether a model may use it.

Large presets are built on the meta device and materialised where they live:
    with torch.device("meta"): model = Transformer(cfg, vocab)
    model.to_empty(device="cuda"); model.init_weights()
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bigtrain.config import TransformerConfig
from bigtrain.models import shapes
from bigtrain.models.kv_cache import KVCache


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


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """wqkv's rows (weights or biases) from separate q, k, v rows, grouped by key/value head."""
    groups = [t.unflatten(0, (kv_heads, -1)) for t in (q, k, v)]
    return torch.cat(groups, dim=1).flatten(0, 1)


def split_qkv(
    w: torch.Tensor, n_heads: int, kv_heads: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q, k, v) rows of wqkv's weight or bias: the inverse of fuse_qkv."""
    per_group = n_heads // kv_heads
    grouped = w.unflatten(0, (kv_heads, -1))
    hd = grouped.shape[1] // (per_group + 2)
    q, k, v = grouped.split([per_group * hd, hd, hd], dim=1)
    return q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1)


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        d, hd = cfg.d_model, cfg.head_dim
        self.head_dim, self.n_heads, self.kv_heads = hd, cfg.n_heads, cfg.kv_heads
        self.per_group = cfg.n_heads // cfg.kv_heads  # query heads per key/value head
        self.wqkv = nn.Linear(d, (cfg.n_heads + 2 * cfg.kv_heads) * hd, bias=cfg.bias)
        self.wo = nn.Linear(cfg.n_heads * hd, d, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.register_load_state_dict_pre_hook(self._fuse_saved_qkv)

    def _fuse_saved_qkv(self, module, state: dict, prefix: str, *args: Any) -> None:
        """A state dict with separate wq, wk, wv (saved before the fusion) loads into wqkv."""
        for leaf in ("weight", "bias"):
            names = [f"{prefix}{w}.{leaf}" for w in ("wq", "wk", "wv")]
            if all(n in state for n in names):
                parts = [state.pop(n) for n in names]
                state[f"{prefix}wqkv.{leaf}"] = fuse_qkv(*parts, self.kv_heads)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        B, T, _ = x.shape
        # -1 groups: under tensor parallelism this rank's wqkv holds only its share of the groups.
        qkv = self.wqkv(x).view(B, T, -1, self.per_group + 2, self.head_dim)
        q, k, v = qkv.split([self.per_group, 1, 1], dim=3)
        q, k, v = q.flatten(2, 3), k.squeeze(3), v.squeeze(3)  # (B, T, heads, D)
        # Views of the fused output keep all of it alive until the backward. Without RoPE and
        # with one query head per group, q, k and v are views, exactly that output. Otherwise
        # q (rotated, or gathered from its groups) is a new tensor, and so are k and v here:
        # then the output is freed at once instead of outliving them.
        if rope is not None:
            q, k, v = apply_rope(q, *rope), apply_rope(k, *rope), v.contiguous()
        elif self.per_group > 1:
            k, v = k.contiguous(), v.contiguous()
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, D)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            is_causal=True,
            dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=self.per_group > 1,  # each KV head serves n_heads / n_kv_heads queries
        )
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))

    def forward_cached(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None, cache: KVCache, layer: int
    ) -> torch.Tensor:
        """forward for the tokens at positions cache.length.. (rope: their rows), attending to the
        cached ones before them too; their keys and values go into `cache`."""
        B, T, _ = x.shape
        qkv = self.wqkv(x).view(B, T, -1, self.per_group + 2, self.head_dim)  # as in forward
        q, k, v = qkv.split([self.per_group, 1, 1], dim=3)
        q, k, v = q.flatten(2, 3), k.squeeze(3), v.squeeze(3)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        start = cache.length
        k, v = cache.update(layer, k.transpose(1, 2), v.transpose(1, 2))
        mask = None  # one new token sees every cached one; a first chunk is causal on its own
        if start > 0 and T > 1:
            mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(start)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k,
            v,
            attn_mask=mask,
            is_causal=start == 0 and T > 1,
            dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=self.per_group > 1,
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
        # One dropout module per place it runs: tools that follow modules through a forward
        # (torch's CommDebugMode, module trackers) expect each module to be called once.
        self.drop_attn, self.drop_mlp = nn.Dropout(cfg.dropout), nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        x = x + self.drop_attn(self.attn(self.norm1(x), rope))
        return x + self.drop_mlp(self.mlp(self.norm2(x)))

    def forward_cached(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None, cache: KVCache, layer: int
    ) -> torch.Tensor:
        x = x + self.drop_attn(self.attn.forward_cached(self.norm1(x), rope, cache, layer))
        return x + self.drop_mlp(self.mlp(self.norm2(x)))


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

    def can_cache(self) -> bool:
        """Whether forward_cached computes what forward does: for this class and its own Blocks
        only, not subclasses (FSDP2's, activation checkpointing's, a user's: their forward adds
        to the one forward_cached mirrors), and for plain weights held whole, not tensor
        subclasses (DTensor: FSDP2, tensor parallel) nor DeepSpeed ZeRO-3's empty placeholders,
        which hooks shard or gather. Blocks compiled in place run eagerly. torch.compile(model)
        is another class (OptimizedModule): callers check isinstance(model, Transformer) first."""
        if type(self) is not Transformer or any(type(b) is not Block for b in self.blocks):
            return False
        return all(type(p) is nn.Parameter and p.numel() > 0 for p in self.parameters())

    def kv_cache(self, capacity: int) -> KVCache:
        """An empty cache for forward_cached, for up to `capacity` positions (max_seq_len at most)."""
        return KVCache(len(self.blocks), min(capacity, self.config.max_seq_len))

    @torch.no_grad()
    def forward_cached(self, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """(B, T) token ids at positions cache.length.. -> (B, T, vocab) logits, as forward gives
        for them after the cached tokens; their keys and values are added to `cache`. Without
        grad: for generation (training runs forward)."""
        start, end = cache.length, cache.length + tokens.shape[1]
        if end > cache.capacity:
            raise ValueError(f"the KV cache holds {cache.capacity} positions, not {end}")
        x = self.tok_emb(tokens)
        rope = None
        if self.config.positions == "learned":
            x = x + self.pos_emb(torch.arange(start, end, device=tokens.device))
        else:
            rope = (self.rope_cos[start:end], self.rope_sin[start:end])
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block.forward_cached(x, rope, cache, i)
        cache.length = end
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


# --------------------------------------------------------------------------- the family's parts
# (models/family.py): how to build it, its blocks and FSDP units, its tensor-parallel plan.


def build(cfg: TransformerConfig, input_shape: tuple[int, ...], num_outputs: int) -> Transformer:
    """The data's vocabulary is `num_outputs`; model.vocab_size, when set, must cover it."""
    return Transformer(cfg, shapes.model_vocab(cfg, num_outputs))


def blocks(model: nn.Module) -> list[str]:
    """Each decoder block: one activation-checkpointing, compile and FSDP unit."""
    return [f"blocks.{i}" for i in range(len(model.blocks))]


fsdp_units = blocks


def tp_plan(model: nn.Module, sequence_parallel: bool = False) -> dict[str, Any]:
    """Megatron-style: wqkv, w1, w3 column-wise (whole key/value groups of heads and hidden units
    split; wqkv's rows are grouped so that a contiguous slice is whole groups), wo and w2
    row-wise (one all-reduce per attention and per MLP). The embedding is split over the vocabulary
    and the head over its outputs, unless the two share one weight: then both stay replicated.

    With `sequence_parallel`, the norms and the residual stream between blocks hold 1/tp of the
    sequence (Shard(1)): the all-reduces become reduce-scatter + all-gather, and the norms'
    activations shrink by tp. Assumes each Block takes the residual stream as its one input."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        RowwiseParallel,
        SequenceParallel,
    )

    sp = sequence_parallel
    between = Shard(1) if sp else Replicate()  # layout of the residual stream between blocks
    plan: dict[str, Any] = {}
    tied = model.head.weight is model.tok_emb.weight
    if not tied:
        plan["tok_emb"] = RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate())
        plan["head"] = ColwiseParallel(input_layouts=between, output_layouts=Replicate())
    elif sp:
        plan["head"] = PrepareModuleInput(
            input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),), use_local_output=True
        )
    if sp:
        # Embeddings (token + position) are added full-length; the first block takes its slice.
        plan["blocks.0"] = PrepareModuleInput(
            input_layouts=(Replicate(),), desired_input_layouts=(Shard(1),), use_local_output=True
        )
        plan["norm_f"] = SequenceParallel()
    for i, block in enumerate(model.blocks):
        p = f"blocks.{i}."
        for name in ("attn.wqkv", "mlp.w1"):
            plan[p + name] = ColwiseParallel()
        if getattr(block.mlp, "w3", None) is not None:
            plan[p + "mlp.w3"] = ColwiseParallel()
        plan[p + "attn.wo"] = RowwiseParallel(output_layouts=between)
        plan[p + "mlp.w2"] = RowwiseParallel(output_layouts=between)
        if sp:
            # Norms run on the local slice of the sequence; attention and MLP need all of it.
            plan[p + "norm1"] = SequenceParallel(use_local_output=True)
            plan[p + "norm2"] = SequenceParallel(use_local_output=True)
            for sub in ("attn", "mlp"):
                plan[p + sub] = PrepareModuleInput(
                    input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),), use_local_output=True
                )
    return plan
