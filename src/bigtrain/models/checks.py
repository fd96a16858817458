"""Config checks of a model's own shape: widths that must split evenly into attention heads.

Each check takes the RunConfig and yields one line per problem (bigtrain/checks.py runs them).
Shapes that depend on the data (image sides, sequence lengths) are checked in data/checks.py.
"""

from __future__ import annotations

from collections.abc import Iterator

from bigtrain.config import RunConfig


def check_shapes(cfg: RunConfig) -> Iterator[str]:
    """Transformer heads and RoPE head size; ViT width over heads."""
    m = cfg.model
    if m.family == "transformer":
        yield from _transformer(m)
    if m.family == "vit" and m.dim % m.heads:
        yield f"model.dim={m.dim} is not divisible by model.heads={m.heads}: change one of them"


def _transformer(m) -> Iterator[str]:
    if m.d_model % m.n_heads:
        yield (
            f"model.d_model={m.d_model} is not divisible by model.n_heads={m.n_heads}: set model.n_heads to a divisor"
        )
    elif m.positions == "rope" and m.head_dim % 2:
        yield f"RoPE needs an even head size, got {m.head_dim}: change model.n_heads or model.d_model"
    if m.n_heads % m.kv_heads:
        yield (
            f"model.n_heads={m.n_heads} is not divisible by model.n_kv_heads={m.kv_heads}: set model.n_kv_heads to a divisor"
        )
