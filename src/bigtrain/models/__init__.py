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
    if cfg.family == "transformer":
        from bigtrain.models.transformer import Transformer

        return Transformer(cfg, model_vocab(cfg, num_outputs))
    if cfg.family == "custom":  # your own nn.Module, by _target_ (docs/extending.md)
        from bigtrain.models.custom import build_custom

        return build_custom(cfg, input_shape, num_outputs)
    raise ValueError(f"unknown model family {cfg.family!r}")


def build_meta_model(cfg: Any, input_shape: tuple[int, ...], num_outputs: int):
    """The model on the meta device, for counting parameters and planning: shapes only. The
    initialisers are skipped: on meta they compute nothing, and torch routes some of them through
    torch._dynamo, a 1.5 s import that would double the time of a dry run."""
    import torch
    from torch.overrides import TorchFunctionMode

    class SkipInit(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if getattr(func, "__module__", None) == "torch.nn.init":
                return args[0] if args else next(iter((kwargs or {}).values()))
            return func(*args, **(kwargs or {}))

    with torch.device("meta"), SkipInit():
        return build_model(cfg, input_shape, num_outputs)


def model_vocab(cfg: Any, data_vocab: int) -> int:
    """The transformer's vocabulary: `model.vocab_size` if set (it must cover the data's tokens),
    else the data's own (256 for bytes). A preset's published size (50257, 32000) keeps its
    parameter count; byte-level runs set model.vocab_size=null."""
    if cfg.vocab_size is None:
        return data_vocab
    if cfg.vocab_size < data_vocab:
        from bigtrain.config import ConfigError

        raise ConfigError(
            f"model.vocab_size={cfg.vocab_size} is smaller than the data's vocabulary {data_vocab}: "
            "set model.vocab_size=null to use the data's"
        )
    return cfg.vocab_size
