"""Plain torch.nn models, one family per record (models/family.py). Nothing here knows about
Lightning, optimizers, strategies or devices; parallelism is applied from outside
(distributed/parallel.py, through each family's parts)."""

from __future__ import annotations

from typing import Any

from bigtrain.models.family import family
from bigtrain.models.shapes import model_vocab

__all__ = ["build_meta_model", "build_model", "family", "model_vocab"]


def build_model(cfg: Any, input_shape: tuple[int, ...], num_outputs: int):
    """Instantiate the family named by `cfg.family` for inputs of `input_shape` (no batch dim)."""
    return family(cfg.family).parts().build(cfg, input_shape, num_outputs)


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
