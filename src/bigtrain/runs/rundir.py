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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bigtrain.config.errors import first_line
from bigtrain.runs.paths import RunDirError, check_no_links, quote_value

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
    "trust_code",
    "accept_changed_data",
    "check_memory",
)
# Trust is typed, never read back: a run directory's files cannot set these (docs/reliability.md).
TRUST_KEYS = ("trust_checkpoint", "trust_code")
# Decisions for one command, typed each time: a resume or an eval drops them from the saved
# overrides (accept_changed_data=true once must not silence the data check of every later resume).
TYPED_EACH_TIME = (*TRUST_KEYS, "accept_changed_data")
# Keys the resume itself sets (never compared with the saved config).
RESUME_OWN = ("resume", *TYPED_EACH_TIME)
# Top-level keys added after runs were saved without them, with the value that behaves as those
# runs did: a resume of such a run composes them with these values, which is no change.
ADDED_KEYS = {
    "overwrite": False,
    "check_memory": True,
    "accept_changed_data": False,
    "trust_code": False,
    "checkpoint_dir": None,
}
# Where a run writes (its checkpoints, when elsewhere than the run directory): a resume or an eval
# does not take it from the run's saved overrides but asks the user to type it again, as it asks
# for a saved --config-dir (docs/reliability.md, "Security").
TYPED_AGAIN = ("checkpoint_dir",)
# Below this much free space a run cannot even write its first checkpoint of a tiny model.
MIN_FREE_BYTES = 16 * 2**20


def override_key(override: str) -> str:
    """'+trainer.max_epochs=4' -> 'trainer.max_epochs'."""
    return override.split("=", 1)[0].lstrip("+~")


def typed_value(overrides: Sequence[str], key: str) -> str | None:
    """The value the last override of `key` gives, without quotes; None where none does, or
    where it gives null or nothing."""
    found = _override_value(list(overrides), key)
    return found[1] if found else None


def find_resume(overrides: list[str]) -> str | None:
    """The directory of a `resume=DIR` override, if there is one (an empty `resume=` is refused
    by validation: runs/checks.check_run_paths)."""
    return typed_value(overrides, "resume")


def _read_yaml(run: Path, name: str, kind: type, what: str) -> Any:
    """The plain contents of `run`/.hydra/`name`, which must be `kind` (dict or list);
    RunDirError naming the file when it is not YAML, or not of that shape."""
    from omegaconf import OmegaConf

    path = run / ".hydra" / name
    try:
        data = OmegaConf.to_container(OmegaConf.load(path))
    except Exception as e:  # not UTF-8, not YAML, or YAML that OmegaConf cannot hold
        reason = first_line(e)
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
    """The files a run appends to or writes into must be what they seem: no link anywhere in the
    run directory, `checkpoints` a folder, and (when resuming) `metrics.csv` UTF-8 CSV text;
    RunDirError naming the file otherwise."""
    check_no_links(run, what)
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


def saved_overrides(run: Path, what: str) -> list[str]:
    """The overrides a run was started with, as data: trust flags and other one-command decisions
    are dropped (TYPED_EACH_TIME: only what the user types now may decide them), and a `hydra.*` override, which Hydra never writes there (it could send
    the log or Hydra's callbacks anywhere), is refused in one line."""
    saved = _read_yaml(run, "overrides.yaml", list, "the list of the run's overrides")
    planted = [o for o in saved if override_key(o).split(".")[0] == "hydra"]
    if planted:
        raise RunDirError(
            f"{what}={run}: .hydra/overrides.yaml sets {planted[0]}, which a run's saved overrides never "
            "hold (Hydra keeps its own apart): it is not replayed; remove that line, or start a new run"
        )
    return [o for o in saved if override_key(o) not in TYPED_EACH_TIME]


def resume_overrides(
    run_dir: str, new: list[str], config_dir: str | None = None
) -> tuple[list[str], str | None]:
    """The overrides and --config-dir that continue `run_dir`; RunDirError when it cannot be.
    `config_dir` is the one typed now: a run directory does not choose it (see config_dir_of)."""

    run = Path(run_dir).absolute()
    if not run.is_dir():
        raise RunDirError(
            f"resume={run_dir} does not exist: give the directory of an earlier run (outputs/<name>/<time>)"
        )
    saved_overrides_file, saved_config = run / ".hydra" / "overrides.yaml", run / ".hydra" / "config.yaml"
    if not saved_overrides_file.is_file() or not saved_config.is_file():
        raise RunDirError(
            f"resume={run_dir} is not a run directory: it has no .hydra/config.yaml and .hydra/overrides.yaml"
        )
    saved = saved_overrides(run, "resume")
    _read_yaml(run, "config.yaml", dict, "the run's config, a mapping")
    check_run_files(run)
    # Hydra's own overrides pass through (Lightning's DDP launcher adds some for each process);
    # an override the run was started with, repeated verbatim, changes nothing.
    hydra_own = [o for o in new if override_key(o).startswith("hydra.")]
    new = [o for o in new if override_key(o) != "resume" and o not in hydra_own]
    check_typed_again(saved, new, "resume", run_dir)
    for o in new:
        key = override_key(o)
        # A TYPED_AGAIN key the run set was just checked to be typed with the run's own value.
        again = key in TYPED_AGAIN and (_override_value(saved, key) or (None, None))[1] is not None
        if key not in RESUME_SAFE and o not in saved and not again:
            raise RunDirError(
                f"{key} cannot change on resume (the run would not be the one that was "
                f"checkpointed): allowed are {', '.join(RESUME_SAFE)}; start a new run instead"
            )
    config_dir = config_dir_of(run, config_dir, "resume", run_dir)
    changed = {override_key(o) for o in new}
    old = [o for o in saved if override_key(o) not in changed | {"resume"}]
    merged = old + new + hydra_own + [f"resume={quote_value(str(run))}"]
    return merged, config_dir


def run_overrides(
    run_dir: str | Path, new: list[str], config_dir: str | None = None
) -> tuple[list[str], str | None]:
    """The run's own overrides with `new` ones replacing theirs, and the --config-dir typed now:
    the config of a run to evaluate on other data (nothing is resumed, so anything may change)."""
    run = Path(run_dir).absolute()
    saved = saved_overrides(run, "eval")
    config_dir = config_dir_of(run, config_dir, "eval", run_dir)
    check_typed_again(saved, list(new), "eval", run_dir)
    changed = {override_key(o) for o in new}
    kept = [o for o in saved if override_key(o) not in changed]
    return kept + list(new), config_dir


def _override_value(overrides: list[str], key: str) -> tuple[str, str | None] | None:
    """(the last override of `key`, its value without quotes; None for null) or None."""
    found = [o for o in overrides if override_key(o) == key and "=" in o]
    if not found:
        return None
    value = found[-1].split("=", 1)[1].strip().strip("'\"")
    return found[-1], (None if value in ("", "null") else value)


def check_typed_again(saved: list[str], new: list[str], command: str, run_dir: str | Path) -> None:
    """A key of TYPED_AGAIN that the run's saved overrides set (checkpoint_dir: where the run
    writes its checkpoints) must be typed now: a path or URL read from a run directory does not
    decide where bigtrain writes or reads (RunDirError says what to type). A resume must type the
    same value (it continues from the checkpoints there); an eval may name another folder."""
    for key in TYPED_AGAIN:
        found = _override_value(saved, key)
        if found is None or found[1] is None:
            continue
        override, value = found
        typed = _override_value(new, key)
        what, how = (
            (f"resume={run_dir}", f"bigtrain resume={run_dir} {override}")
            if command == "resume"
            else (f"eval {run_dir}", f"bigtrain eval {run_dir} {override}")
        )
        if typed is None:
            raise RunDirError(
                f"{what}: the run keeps its checkpoints in {key}={value}, which a run directory cannot "
                f"choose for you: type it if you trust that place ({how})"
            )
        if command == "resume" and typed[1] != value:
            raise RunDirError(
                f"{what}: {typed[0]} is not where the run keeps its checkpoints ({key}={value}): a resume "
                f"continues from them, so type that one ({how}), or start a new run"
            )


def config_dir_of(run: Path, typed: str | None, command: str, run_dir: str | Path) -> str | None:
    """The --config-dir to compose a saved run with: the one typed now. A run made with a
    --config-dir names it in .hydra/hydra.yaml, but a path read from a run directory must not
    choose which configs, and so which code, run: the user types it again (RunDirError says how)."""
    saved = _saved_config_dir(run)
    if saved is not None and typed is None:
        what, how = (
            (f"resume={run_dir}", f"bigtrain --config-dir {quote_value(saved)} resume={run_dir}")
            if command == "resume"
            else (f"eval {run_dir}", f"bigtrain eval {run_dir} --config-dir {quote_value(saved)}")
        )
        raise RunDirError(
            f"{what}: the run was composed with --config-dir {saved}, which a run directory cannot choose "
            f"for you: type it if you trust those configs ({how})"
        )
    return typed


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
        added_since = key not in saved and key in ADDED_KEYS and ADDED_KEYS[key] == b
        if key not in skip and not added_since:
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
