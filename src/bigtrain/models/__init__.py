"""Plain torch.nn models, one file per family. Nothing here knows about Lightning, optimizers,
strategies or devices; parallelism is applied from outside (see docs/architecture.md)."""

from __future__ import annotations

from typing import Any


def build_model(cfg: Any, input_shape: tuple[int, ...], num_outputs: int):
    """Instantiate the family named by `cfg.family` for inputs of `input_shape` (no batch dim)."""
    if cfg.family == "mlp":
        from bigtrain.models.mlp import MLP

        return MLP(cfg, input_shape, num_outputs)
    if cfg.family == "cnn":
        from bigtrain.models.cnn import CNN

        return CNN(cfg, input_shape, num_outputs)
    if cfg.family == "vit":
        from bigtrain.models.vit import ViT

        return ViT(cfg, input_shape, num_outputs)
    raise ValueError(f"unknown model family {cfg.family!r}")
