"""bigtrain: configuration-driven training of large neural models.

Python API (the command line does the same; bad overrides raise bigtrain.ConfigError):
    cfg = bigtrain.compose(["+experiment=seed", "trainer.max_epochs=2"])
    results = bigtrain.train(["+experiment=seed"], run_dir="outputs/nb")
    results = bigtrain.train(cfg, run_dir="outputs/nb2", quiet=True)   # a composed config, no output
    results = bigtrain.resume("outputs/nb", ["trainer.max_epochs=60"])   # continue that run
    model = bigtrain.load("outputs/nb")            # the best checkpoint with its preprocessing
    rows = model.predict("new_rows.csv")           # or an image file/folder, or a text prompt
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bigtrain.config.errors import ConfigError

__version__ = "0.1.0"
__all__ = ["ConfigError", "compose", "load", "resume", "train"]

# What quiet=True turns off: the progress bar and the model summary (the rest is printed, and
# swallowed).
QUIET = ["trainer.enable_progress_bar=false", "callbacks.model_summary_depth=0"]


def compose(overrides: Sequence[str] = (), config_dir: str | None = None):
    """The composed config, as a DictConfig without the `hydra` node, with what a language model
    implies added as the command adds it. Validated as `train` validates it: ConfigError (every
    mistake, one line each) for bad input."""
    from bigtrain.runs.compose import compose_run
    from bigtrain.runs.validate import validate

    cfg = compose_run(list(overrides), config_dir)[0]
    validate(cfg)
    return cfg


def train(
    overrides: Sequence[str] | Any = (),
    run_dir: str | Path | None = None,
    config_dir: str | None = None,
    quiet: bool = False,
) -> dict:
    """Validate and run `bigtrain OVERRIDES` (or a config from `compose`) in this process; return
    the results dict. `quiet=True` prints nothing (for notebooks); results.json has everything."""
    import io
    import time

    from omegaconf import DictConfig, OmegaConf

    from bigtrain.runs.notices import library_notices
    from bigtrain.runs.train import train as _train
    from bigtrain.runs.validate import validate

    if isinstance(overrides, DictConfig):
        composed, overrides = overrides, []
        if quiet:
            composed = OmegaConf.merge(composed, OmegaConf.from_dotlist(QUIET))
    else:
        overrides = [*overrides, *(QUIET if quiet else [])]
        composed = compose(overrides, config_dir)
    cfg = validate(composed)
    if run_dir is None:
        run_dir = Path("outputs") / cfg.name / time.strftime("%Y-%m-%d_%H-%M-%S")
    from bigtrain.runs.lock import hold
    from bigtrain.runs.rundir import check_run_files

    with contextlib.ExitStack() as stack:
        # The lock first, held to the end: a live run's directory is refused before its .hydra/
        # is touched, and nothing starts in this one until the run is over.
        with _as_config_error():
            check_run_files(Path(run_dir), what="run_dir")  # no link inside, before the lock file
            stack.enter_context(hold(run_dir))
            _claim(Path(run_dir), cfg)
            _save_run_config(Path(run_dir), composed, overrides)
        if quiet:
            stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        # Lightning's info lines and libraries' warnings: the run's bigtrain.log, as the command's.
        stack.enter_context(library_notices(Path(run_dir) / "bigtrain.log"))
        stack.enter_context(_quiet_logs(quiet))
        return _train(cfg, run_dir)


@contextlib.contextmanager
def _as_config_error():
    """A run directory that cannot be used (runs/paths.RunDirError) as a ConfigError."""
    from bigtrain.runs.paths import RunDirError

    try:
        yield
    except RunDirError as e:
        raise ConfigError(str(e)) from e


def _claim(run_dir: Path, cfg) -> None:
    """The folder must not hold another run: resume=, this SLURM job's own folder and
    overwrite=true aside (the last removes the earlier run's files)."""
    from bigtrain.cluster.slurm import is_this_jobs_dir
    from bigtrain.runs.paths import check_new_run, clear_run, holds_run

    if cfg.resume is not None or is_this_jobs_dir(run_dir):
        return
    check_new_run(run_dir, "run_dir", cfg.overwrite, cfg.dry_run)
    if cfg.overwrite and holds_run(run_dir):
        clear_run(run_dir)


@contextlib.contextmanager
def _quiet_logs(quiet: bool):
    """bigtrain's info lines off while a quiet run trains (Lightning's go to the run's log file:
    runs/notices.py)."""
    import logging

    loggers = [logging.getLogger("bigtrain")]
    levels = [lg.level for lg in loggers]
    if quiet:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def load(run_dir: str | Path, checkpoint: str | Path | None = None, trust_code: bool = False):
    """A finished run's model (its best checkpoint, or `checkpoint`) with its preprocessing:
    `.predict(path or prompt)`, `.module` (the LightningModule), `.preprocessing`.
    `trust_code=True` builds a model of the run's config from outside bigtrain (`_target_`):
    only for runs you trust, as the run directory cannot decide that itself."""
    from bigtrain.runs.inference import load as _load

    return _load(run_dir, checkpoint, trust_code)


def resume(
    run_dir: str | Path,
    overrides: Sequence[str] = (),
    config_dir: str | None = None,
    trust_code: bool = False,
) -> dict:
    """Continue the run in `run_dir` from its newest intact checkpoint, as `bigtrain resume=DIR`.
    `config_dir` and `trust_code` are yours to give again: the run directory chooses neither."""
    from omegaconf import OmegaConf

    from bigtrain.runs.rundir import check_same_config, override_key, resume_overrides
    from bigtrain.targets.trust import check_trusted

    typed = [*overrides, *(["trust_code=true"] if trust_code else [])]
    with _as_config_error():
        merged, config_dir = resume_overrides(str(run_dir), typed, config_dir)
        composed = compose(merged, config_dir)
        check_trusted(OmegaConf.to_container(composed), trust_code, f"resume {run_dir}", "trust_code=True")
        check_same_config(str(run_dir), composed, {override_key(o) for o in typed})
    return train(merged, run_dir, config_dir)


def _save_run_config(run_dir: Path, composed, overrides: Sequence[str]) -> None:
    """.hydra/config.yaml and overrides.yaml, as the command writes them: what resume reads."""
    from omegaconf import OmegaConf

    from bigtrain.util import write_text_atomic

    hydra_dir = run_dir / ".hydra"
    write_text_atomic(hydra_dir / "config.yaml", OmegaConf.to_yaml(composed))
    write_text_atomic(hydra_dir / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(overrides))))
