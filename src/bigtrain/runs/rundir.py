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

import csv
import io
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
    """The directory of a `resume=DIR` override, if there is one (an empty `resume=` is refused
    by validation: runs/checks.check_run_paths)."""
    values = [o.split("=", 1)[1].strip("'\"") for o in overrides if override_key(o) == "resume" and "=" in o]
    return values[-1] if values and values[-1] not in ("", "null") else None


def _read_yaml(run: Path, name: str, kind: type, what: str) -> Any:
    """The plain contents of `run`/.hydra/`name`, which must be `kind` (dict or list);
    RunDirError naming the file when it is not YAML, or not of that shape."""
    from omegaconf import OmegaConf

    path = run / ".hydra" / name
    try:
        data = OmegaConf.to_container(OmegaConf.load(path))
    except Exception as e:  # not UTF-8, not YAML, or YAML that OmegaConf cannot hold
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RunDirError(
            f"resume={run}: .hydra/{name} is not readable YAML ({reason}): restore it from a copy of "
            "the run, or start a new run"
        ) from e
    if not isinstance(data, kind) or (kind is list and not all(isinstance(o, str) for o in data)):
        raise RunDirError(
            f"resume={run}: .hydra/{name} should hold {what}: restore it from a copy of the run, "
            "or start a new run"
        )
    return data


def check_run_files(run: Path, what: str = "resume") -> None:
    """The files a run appends to or writes into must be what they seem: `checkpoints` a folder,
    and (when resuming) `metrics.csv` UTF-8 CSV text; RunDirError naming the file otherwise."""
    ckpt_dir = run / "checkpoints"
    if ckpt_dir.exists() and not ckpt_dir.is_dir():
        raise RunDirError(
            f"{what}={run}: checkpoints is a file, not a folder: move it away (the run keeps its "
            "checkpoints in that folder)" + ("" if what == "resume" else f", or choose another {what}")
        )
    metrics = run / "metrics.csv"
    if what != "resume" or not metrics.is_file():
        return
    try:
        data = metrics.read_bytes().decode("utf-8")
        if "\0" in data or (data.strip() and not next(csv.reader(io.StringIO(data)), None)):
            raise ValueError("NUL bytes or no header line")
    except (ValueError, csv.Error) as e:
        reason = (
            f"byte 0x{e.object[e.start]:02x} at offset {e.start}" if isinstance(e, UnicodeDecodeError) else e
        )
        raise RunDirError(
            f"resume={run}: metrics.csv is not CSV text ({reason}), and the resumed run appends to it: "
            "move it away (the run starts a new one) or restore it from a copy"
        ) from e


def resume_overrides(run_dir: str, new: list[str]) -> tuple[list[str], str | None]:
    """The overrides (and --config-dir) that continue `run_dir`; RunDirError when it cannot be."""

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
    saved = _read_yaml(run, "overrides.yaml", list, "the list of the run's overrides")
    _read_yaml(run, "config.yaml", dict, "the run's config, a mapping")
    check_run_files(run)
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


def run_overrides(run_dir: str | Path, new: list[str]) -> tuple[list[str], str | None]:
    """The run's own overrides with `new` ones replacing theirs, and its --config-dir: the
    config of a run to evaluate on other data (nothing is resumed, so anything may change)."""
    run = Path(run_dir).absolute()
    saved = _read_yaml(run, "overrides.yaml", list, "the list of the run's overrides")
    changed = {override_key(o) for o in new}
    return [o for o in saved if override_key(o) not in changed] + list(new), _saved_config_dir(run)


def _saved_config_dir(run: Path) -> str | None:
    """The --config-dir the run was started with (Hydra records it as a command-line source)."""

    if not (run / ".hydra" / "hydra.yaml").is_file():
        return None
    saved = _read_yaml(run, "hydra.yaml", dict, "Hydra's settings of the run, a mapping")
    sources: Any = saved
    for key in ("hydra", "runtime", "config_sources"):
        sources = sources.get(key) if isinstance(sources, dict) else None
    sources = sources or []
    if not isinstance(sources, list) or not all(isinstance(src, dict) for src in sources):
        raise RunDirError(
            f"resume={run}: .hydra/hydra.yaml should list hydra.runtime.config_sources: restore it "
            "from a copy of the run, or start a new run"
        )
    for src in sources:
        if src.get("provider") == "command-line" and src.get("schema") == "file":
            return str(src.get("path"))
    return None


def check_same_config(run_dir: str, composed: Any, changed: set[str]) -> None:
    """The recomposed config must equal the saved one except where the resume changes it."""
    from omegaconf import OmegaConf

    saved = _read_yaml(Path(run_dir).absolute(), "config.yaml", dict, "the run's config, a mapping")
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


def output_dir(cfg: Any, key: str) -> str | None:
    """The folder Hydra will create for `key` (hydra.run.dir or hydra.sweep.dir) of a composed
    config with its hydra node; None where only Hydra's runtime can resolve it (${hydra:...},
    values Hydra fills in per job). RunDirError for an empty value or one that cannot resolve."""
    from omegaconf import OmegaConf
    from omegaconf.errors import InterpolationKeyError, UnsupportedInterpolationType

    section, name = key.rsplit(".", 1)
    raw = (OmegaConf.to_container(OmegaConf.select(cfg, section), resolve=False) or {}).get(name)
    if raw is None or not str(raw).strip():
        default = "outputs/<name>/multirun/<time>" if key == "hydra.sweep.dir" else "outputs/<name>/<time>"
        raise RunDirError(
            f"{key} is empty: give a folder (e.g. {key}=outputs/run1), or drop {key}= for {default}"
        )
    try:
        value = OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
    except (InterpolationKeyError, UnsupportedInterpolationType) as e:
        reason = str(e).strip().splitlines()[0]
        raise RunDirError(f"{key}={raw} cannot be resolved ({reason}): fix the interpolation") from e
    except Exception as e:  # an interpolation only Hydra's runtime can resolve: checked at train time
        env = re.search(r"Environment variable '([^']*)' not found", str(e))
        if env is None:
            return None
        raise RunDirError(
            f"{key}={raw}: the environment variable {env.group(1)} is not set: set it, or give a "
            f"default, e.g. ${{oc.env:{env.group(1)},outputs/run}}"
        ) from e
    return str(value) if value else None


def check_output_subdir(cfg: Any) -> None:
    """hydra.output_subdir (where Hydra copies the config, .hydra by default) stays inside the
    run directory: a relative path without `..`, or null for none."""
    from omegaconf import OmegaConf

    value = OmegaConf.select(cfg, "hydra.output_subdir", default=None)
    if value is None:
        return
    parts = Path(str(value)).parts
    if not str(value).strip() or Path(str(value)).is_absolute() or ".." in parts:
        raise RunDirError(
            f"hydra.output_subdir={value} would put the run's config outside its run directory: give "
            "a folder name inside it (the default is .hydra), or hydra.output_subdir=null for none"
        )


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
