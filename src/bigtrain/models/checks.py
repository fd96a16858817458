"""Config checks of a model: its family record's own checks (models/<family>_record.py: heads,
widths, patches and depth against the image side, a Hugging Face folder to start from).

Each check takes the RunConfig and yields one line per problem (bigtrain/checks.py runs them).
"""

from __future__ import annotations

from collections.abc import Iterator

from bigtrain.config import RunConfig
from bigtrain.models.family import family


def check_shapes(cfg: RunConfig) -> Iterator[str]:
    """Every check the model's family record lists."""
    for check in family(cfg.model.family).checks:
        yield from check(cfg)
