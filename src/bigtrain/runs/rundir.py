"""The run directory before a run starts: `bigtrain resume=DIR`, and whether output can be written.

`bigtrain resume=DIR [overrides]` becomes the command line that made DIR (its
.hydra/overrides.yaml, and the --config-dir recorded in .hydra/hydra.yaml) plus the new
overrides, with `hydra.run.dir` pinned to DIR so that results.json, metrics.csv and checkpoints
go on in the same folder. Only overrides that cannot change what the run computes up to the
checkpoint are allowed on resume (RESUME_SAFE). The recomposed config is compared with the saved
.hydra/config.yaml, so a change to the shipped configs since the run started is caught instead
of silently continuing a different run.

No torch here: this runs before the command decides anything.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

# Keys a resumed run may change: how long it trains and what it shows, never what it computes.
RESUME_SAFE = (
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.limit_test_batches",
    "trainer.enable_progress_bar",
    "callbacks.checkpoint.every_n_train_steps",
    "callbacks.progress_bar",
    "callbacks.print_config",
    "callbacks.model_summary_depth",
    "callbacks.plots",
    "test_after_fit",
    "trust_checkpoint",
)
# Keys the resume itself sets (never compared with the saved config).
RESUME_OWN = ("resume", "trust_checkpoint")
# Below this much free space a run cannot even write its first checkpoint of a tiny model.
MIN_FREE_BYTES = 16 * 2**20


class RunDirError(Exception):
    """A run directory that cannot be used; the message is one line."""


def override_key(override: str) -> str:
    """'+trainer.max_epochs=4' -> 'trainer.max_epochs'."""
    return override.split("=", 1)[0].lstrip("+~")


def _quote(value: str) -> str:
    """A path as a Hydra override value (quoted when it has characters the parser would read)."""
    if re.fullmatch(r"[\w./\-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def find_resume(overrides: list[str]) -> str | None:
    """The directory of a `resume=DIR` override, if there is one."""
    values = [o.split("=", 1)[1] for o in overrides if override_key(o) == "resume" and "=" in o]
    return values[-1].strip("'\"") if values and values[-1] not in ("", "null") else None


def resume_overrides(run_dir: str, new: list[str]) -> tuple[list[str], str | None]:
    """The overrides (and --config-dir) that continue `run_dir`; RunDirError when it cannot be."""
    from omegaconf import OmegaConf

    run = Path(run_dir).absolute()
    if not run.is_dir():
        raise RunDirError(
            f"resume={run_dir} does not exist: give the directory of an earlier run (outputs/<name>/<time>)"
        )
    saved_overrides, saved_config = run / ".hydra" / "overrides.yaml", run / ".hydra" / "config.yaml"
    if not saved_overrides.is_file() or not saved_config.is_file():
        raise RunDirError(
            f"resume={run_dir} is not a run directory: it has no .hydra/config.yaml and .hydra/overrides.yaml"
        )
    saved = [str(o) for o in OmegaConf.load(saved_overrides)]
    # Hydra's own overrides pass through (Lightning's DDP launcher adds some for each process);
    # an override the run was started with, repeated verbatim, changes nothing.
    hydra_own = [o for o in new if override_key(o).startswith("hydra.")]
    new = [o for o in new if override_key(o) != "resume" and o not in hydra_own]
    for o in new:
        if override_key(o) not in RESUME_SAFE and o not in saved:
            raise RunDirError(
                f"{override_key(o)} cannot change on resume (the run would not be the one that was "
                f"checkpointed): allowed are {', '.join(RESUME_SAFE)}; start a new run instead"
            )
    changed = {override_key(o) for o in new}
    old = [o for o in saved if override_key(o) not in changed | {"resume"}]
    merged = old + new + hydra_own + [f"resume={_quote(str(run))}"]
    return merged, _saved_config_dir(run)


def _saved_config_dir(run: Path) -> str | None:
    """The --config-dir the run was started with (Hydra records it as a command-line source)."""
    from omegaconf import OmegaConf

    hydra_yaml = run / ".hydra" / "hydra.yaml"
    if not hydra_yaml.is_file():
        return None
    sources = OmegaConf.select(OmegaConf.load(hydra_yaml), "hydra.runtime.config_sources") or []
    for src in sources:
        if src.get("provider") == "command-line" and src.get("schema") == "file":
            return str(src.get("path"))
    return None


def check_same_config(run_dir: str, composed: Any, changed: set[str]) -> None:
    """The recomposed config must equal the saved one except where the resume changes it."""
    from omegaconf import OmegaConf

    saved = OmegaConf.to_container(OmegaConf.load(Path(run_dir) / ".hydra" / "config.yaml"))
    now = OmegaConf.to_container(composed)
    skip = set(changed) | set(RESUME_OWN)
    for key, (a, b) in _differences(saved, now).items():
        if key not in skip:
            raise RunDirError(
                f"resume={run_dir}: {key} was {a} when the run started and would now be {b} (the configs "
                "changed since): restore them, or start a new run"
            )


def _differences(a: Any, b: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: dict[str, tuple[Any, Any]] = {}
        for k in sorted(set(a) | set(b), key=str):
            out.update(_differences(a.get(k), b.get(k), f"{prefix}{k}" if not prefix else f"{prefix}.{k}"))
        return out
    return {} if a == b else {prefix: (a, b)}


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(run_dir: str | Path, what: str = "hydra.run.dir", need: int = 0) -> None:
    """The run directory can be created and written, and its file system is not full.

    Tries a real file in the nearest existing folder on the way (permission bits do not stop
    root, a read-only mount does), so the answer is the one training would get."""
    path = Path(run_dir).absolute()
    base = path
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise RunDirError(
            f"{what}={run_dir} cannot be created: {base} is a file, not a folder; choose another {what}"
        )
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".bigtrain-write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise RunDirError(
            f"{what}={run_dir} is not writable ({e.strerror} in {base}): choose a folder you can write to"
        ) from e
    free = shutil.disk_usage(base).free
    if free < max(MIN_FREE_BYTES, need):
        raise RunDirError(
            f"{what}={run_dir} is on a full file system ({free / 2**20:.1f} MiB free in {base}, "
            f"{max(MIN_FREE_BYTES, need) / 2**20:.1f} MiB needed for checkpoints): free space or choose another folder"
        )
