"""The ViT family's record (models/family.py): images in, its encoder blocks as activation
checkpointing, compile and FSDP units, no tensor-parallel plan. Its nn.Module and torch
functions: models/vit.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bigtrain.models.family import Family


def _shape(cfg: Any) -> Iterator[str]:
    """Width over heads, and patches against the image side."""
    m, d = cfg.model, cfg.data
    if m.dim % m.heads:
        yield f"model.dim={m.dim} is not divisible by model.heads={m.heads}: change one of them"
    side = getattr(d, "image_side", None)
    if side and side % m.patch_size:
        yield (
            f"model.patch_size={m.patch_size} does not divide the {side}x{side} images: "
            f"choose a divisor of {side}"
            + (" or change data.image_size" if getattr(d, "image_size", None) else "")
        )


FAMILY = Family(name="vit", inputs="image", module="bigtrain.models.vit", checks=(_shape,))
