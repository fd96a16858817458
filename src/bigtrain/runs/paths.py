"""What a run may write, and where: inside its own run directory, never through a link out of
it, and never over the files of another run (docs/reliability.md, "Security").

A run directory may come from someone else. Every path bigtrain writes or deletes is inside the
directory the user named, with no symbolic link on the way; a new run into a folder that already
holds a run is refused unless the user typed `overwrite=true` (or continues it with `resume=`).

No torch here: the command checks these before importing anything heavy.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

# What a run writes into its directory: what `overwrite=true` removes before a new run there
# (nothing else is touched: a folder may hold the user's own files too). Lightning's relaunched
# DDP processes and ranks under srun log to <job name>.log files of their own.
RUN_ENTRIES = (
    ".hydra",
    "checkpoints",
    "evals",
    "plots",
    "tensorboard",
    "wandb",
    "metrics.csv",
    "hparams.yaml",
    "results.json",
    "resume_error.json",
    "plan.json",
    "preprocessing.json",
    "inputs.json",
    "tokenizer.json",
    "bigtrain.log",
)
RUN_GLOBS = ("hpc_ckpt_*.ckpt", "train_ddp_process_*.log", "bigtrain_rank*.log")
# A run directory is walked for links up to this many entries (run directories hold hundreds).
MAX_WALK = 100_000


class RunDirError(Exception):
    """A run directory that cannot be used; the message is one line."""


def quote_value(value: str) -> str:
    """A path as a Hydra override value (quoted when it has characters the parser would read)."""
    if re.fullmatch(r"[\w./\-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def check_no_links(run: Path, what: str) -> None:
    """No symbolic link anywhere inside `run`: bigtrain writes, appends and deletes only inside
    the run directory, and a link (`checkpoints/` -> elsewhere) would carry those writes out."""
    if not run.is_dir():
        return
    for n, (root, dirs, files) in enumerate(os.walk(run)):
        for name in [*dirs, *files]:
            path = Path(root) / name
            if path.is_symlink():
                rel = path.relative_to(run)
                raise RunDirError(
                    f"{what}={run}: {rel} is a symbolic link (to {os.readlink(path)}), and bigtrain writes "
                    f"only inside the run directory: replace the link with a real {'folder' if name in dirs else 'file'}, "
                    "or use a copy of the run"
                )
        if n > MAX_WALK:
            return


def check_inside(run: Path, path: Path, what: str) -> None:
    """`path` (to be written) lies inside `run` with no link on the way; RunDirError otherwise."""
    run = Path(run).absolute()
    path = Path(path).absolute()
    try:
        rel = path.relative_to(run)
    except ValueError:
        raise RunDirError(
            f"{what} {run}: {path} is outside the run directory: nothing is written there"
        ) from None
    here = run
    for part in rel.parts:
        here = here / part
        if here.is_symlink():
            raise RunDirError(
                f"{what} {run}: {here.relative_to(run)} is a symbolic link (to {os.readlink(here)}), and "
                "bigtrain writes only inside the run directory: replace the link with a real folder, or use a copy of the run"
            )
    if here.exists() and not here.resolve().is_relative_to(run.resolve()):
        raise RunDirError(
            f"{what} {run}: {path} resolves outside the run directory: nothing is written there"
        )


def holds_run(run: Path) -> str | None:
    """What shows that `run` already holds a run (its config, results, metrics or checkpoints);
    None for a new or empty folder, or one that holds only a dry run's plan."""
    for name in (".hydra/config.yaml", "results.json", "metrics.csv"):
        if (run / name).exists():
            return name
    ckpts = run / "checkpoints"
    if ckpts.is_dir() and any(ckpts.iterdir()):
        return "checkpoints/"
    return None


def check_new_run(run: Path, what: str, overwrite: bool, dry_run: bool) -> None:
    """A new run must not write into a run directory that holds a run: its results, metrics,
    config and checkpoints would mix with or replace the earlier run's. RunDirError names the
    ways on: resume=, another folder, or overwrite=true (not for a dry run, which replaces nothing)."""
    found = holds_run(run)
    if found is None or (overwrite and not dry_run):
        return
    status = read_status(run)
    ways = f"continue it with bigtrain resume={quote_value(str(run))}, choose another {what}"
    raise RunDirError(
        f"{what}={run} already holds a run ({found}{f', {status}' if status else ''}): {ways}"
        + ("" if dry_run else ", or add overwrite=true to replace its files")
    )


def check_new_sweep(sweep: Path, what: str) -> None:
    """A grid sweep numbers its jobs from 0: run again into the same folder, it would write over
    the first sweep's job folders. (An Optuna sweep resumes its study there instead.)"""
    if (sweep / "multirun.yaml").exists():
        raise RunDirError(
            f"{what}={sweep} already holds a sweep (multirun.yaml), whose job folders a new sweep would "
            f"write over: choose another {what}"
        )


def read_status(run: Path) -> str | None:
    """results.json's status of the run in `run`, if it has a readable one."""
    try:
        status = json.loads((run / "results.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None
    return status if isinstance(status, str) else None


def clear_run(run: Path) -> list[str]:
    """Remove what an earlier run wrote into `run` (RUN_ENTRIES, RUN_GLOBS; a link is removed, never
    followed); the names removed. Only for `overwrite=true`, with the run directory's lock held."""
    removed = []
    found = [run / n for n in RUN_ENTRIES] + [p for g in RUN_GLOBS for p in sorted(run.glob(g))]
    for path in found:
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            continue
        removed.append(path.name)
    return removed
