"""The MLP family's record (models/family.py): features in, a tensor-parallel plan that splits
consecutive Linears in pairs. Its nn.Module and torch functions: models/mlp.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bigtrain.models.family import Family


def _tp_checks(cfg: Any, tp: int) -> Iterator[str]:
    # The norms act on the hidden features that tensor parallel splits (a Transformer's act on
    # the residual stream, which every rank holds whole).
    m = cfg.model
    if m.norm != "none":
        yield (
            f"strategy={cfg.strategy.name} shards the hidden features, which model.norm={m.norm} "
            "normalises across: set model.norm=none or use strategy=fsdp"
        )


FAMILY = Family(name="mlp", inputs="features", module="bigtrain.models.mlp", tp_checks=_tp_checks)
