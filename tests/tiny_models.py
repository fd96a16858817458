"""A two-layer Transformer config for tests that build the model directly (no Hydra)."""

from __future__ import annotations

import dataclasses

from bigtrain.config import TransformerConfig

GPT_TINY = TransformerConfig(
    family="transformer",
    n_layers=2,
    d_model=32,
    n_heads=4,
    n_kv_heads=None,
    d_ff=None,
    vocab_size=None,
    max_seq_len=16,
    norm="layernorm",
    mlp="gelu",
    positions="learned",
    tie_embeddings=True,
    bias=True,
    dropout=0.0,
    norm_eps=1e-5,
    rope_theta=10000.0,
    init_from=None,
)


def tiny_transformer(**changes) -> TransformerConfig:
    """GPT_TINY with `changes` applied."""
    return dataclasses.replace(GPT_TINY, **changes)
