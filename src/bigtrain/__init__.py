"""bigtrain: configuration-driven training of large neural models.

Python API (the command line does the same):
    cfg = bigtrain.compose(["+experiment=seed", "trainer.max_epochs=2"])
    results = bigtrain.train(["+experiment=seed"], run_dir="outputs/nb")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__version__ = "0.1.0"


def compose(overrides: Sequence[str] = (), config_dir: str | None = None):
    """The composed (unvalidated) config, as a DictConfig without the `hydra` node."""
    from bigtrain.cli import compose as _compose

    return _compose(overrides, config_dir)


def train(
    overrides: Sequence[str] = (), run_dir: str | Path | None = None, config_dir: str | None = None
) -> dict:
    """Validate and run `bigtrain OVERRIDES` in this process; return the results dict."""
    import time

    from bigtrain.build import train as _train
    from bigtrain.config import validate

    cfg = validate(compose(overrides, config_dir))
    if run_dir is None:
        run_dir = Path("outputs") / cfg.name / time.strftime("%Y-%m-%d_%H-%M-%S")
    return _train(cfg, run_dir)
