"""The key/value cache of generation: each layer's keys and values of the tokens seen so far.

models/transformer.py's forward_cached fills it (Transformer.kv_cache makes one); generation
(callbacks/samples.py) then runs one new token at a time instead of the whole context.
"""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of the tokens a model has seen, per layer, for generation: (B, kv_heads,
    capacity, head_dim) buffers, allocated at a layer's first update in its keys' dtype and device,
    of which the first `length` positions are filled."""

    def __init__(self, n_layers: int, capacity: int) -> None:
        self.capacity, self.length = capacity, 0
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (B, kv_heads, T, D) keys and values at positions length.. of `layer`; returns the
        layer's keys and values of every position so far. The caller advances `length`."""
        end = self.length + k.shape[2]
        if self.keys[layer] is None:
            shape = (*k.shape[:2], self.capacity, k.shape[3])
            self.keys[layer], self.values[layer] = k.new_empty(shape), v.new_empty(shape)
        keys, values = self.keys[layer], self.values[layer]
        keys[:, :, self.length : end] = k
        values[:, :, self.length : end] = v
        return keys[:, :, :end], values[:, :, :end]
