"""The CNN family's record (models/family.py): images in, no tensor-parallel plan. Its
nn.Module and torch functions: models/cnn.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bigtrain.models.family import Family


def _depth_fits(cfg: Any) -> Iterator[str]:
    """Each conv block halves the side: n blocks need a side of at least 2^n."""
    side, m = getattr(cfg.data, "image_side", None), cfg.model
    if side and side < 2 ** len(m.channels):
        yield (
            f"{len(m.channels)} CNN blocks halve {side}x{side} images below 1x1: use at most "
            f"{side.bit_length() - 1} model.channels, or a larger data.image_size"
        )


FAMILY = Family(name="cnn", inputs="image", module="bigtrain.models.cnn", checks=(_depth_fits,))
