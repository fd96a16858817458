"""The record (models/family.py) of a model of your own, given by `_target_`: what it can do is
what its class declares (models/custom.py: `bigtrain_blocks`, `bigtrain_tp_plan`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bigtrain.models.family import Family

# What a class of yours may declare (models/custom.py reads them).
BLOCKS_ATTRIBUTE = "bigtrain_blocks"
TP_PLAN_METHOD = "bigtrain_tp_plan"


def _tp_checks(cfg: Any, tp: int) -> Iterator[str]:
    """Tensor parallelism needs the class to give its plan. The class is imported here (its own
    import errors are reported by models/checks.check_model_target, so they are not repeated)."""
    from bigtrain.config import ConfigError
    from bigtrain.targets import resolve

    try:
        target = resolve(cfg.model.target, "model")
    except ConfigError:
        return
    if not callable(getattr(target, TP_PLAN_METHOD, None)):
        yield (
            f"strategy={cfg.strategy.name} needs a tensor-parallel plan, which model._target_="
            f"{cfg.model.target} does not give: add a {TP_PLAN_METHOD}(self, sequence_parallel) method "
            "to the class (docs/extending.md), or use strategy=fsdp or strategy=ddp"
        )


FAMILY = Family(
    name="custom", inputs="features", module="bigtrain.models.custom", tp_checks=_tp_checks, own_code=True
)
