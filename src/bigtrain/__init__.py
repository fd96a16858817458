"""bigtrain: configuration-driven training of large neural models.

Python API (the command line does the same):
    cfg = bigtrain.compose(["+experiment=seed", "trainer.max_epochs=2"])
    results = bigtrain.train(["+experiment=seed"], run_dir="outputs/nb")
    results = bigtrain.resume("outputs/nb", ["trainer.max_epochs=60"])   # continue that run
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

    from bigtrain.checks import validate
    from bigtrain.runs.train import train as _train

    composed = compose(overrides, config_dir)
    cfg = validate(composed)
    if run_dir is None:
        run_dir = Path("outputs") / cfg.name / time.strftime("%Y-%m-%d_%H-%M-%S")
    _save_run_config(Path(run_dir), composed, overrides)
    return _train(cfg, run_dir)


def resume(run_dir: str | Path, overrides: Sequence[str] = (), config_dir: str | None = None) -> dict:
    """Continue the run in `run_dir` from its newest intact checkpoint, as `bigtrain resume=DIR`."""
    from bigtrain.runs.rundir import check_same_config, override_key, resume_overrides

    merged, saved_config_dir = resume_overrides(str(run_dir), list(overrides))
    config_dir = config_dir or saved_config_dir
    check_same_config(str(run_dir), compose(merged, config_dir), {override_key(o) for o in overrides})
    return train(merged, run_dir, config_dir)


def _save_run_config(run_dir: Path, composed, overrides: Sequence[str]) -> None:
    """.hydra/config.yaml and overrides.yaml, as the command writes them: what resume reads."""
    from omegaconf import OmegaConf

    from bigtrain.runs.rundir import write_text_atomic

    hydra_dir = run_dir / ".hydra"
    write_text_atomic(hydra_dir / "config.yaml", OmegaConf.to_yaml(composed))
    write_text_atomic(hydra_dir / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(overrides))))
