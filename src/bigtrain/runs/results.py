"""results.json: the run's contract with scripts, sweeps and people; and the closing table.

Keys are stable: add, never rename. Written atomically (temporary file, then rename), so a
reader never sees half a file.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

RESULTS_FILE = "results.json"


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None], suffix: str = ".tmp") -> None:
    """Write `path` so that readers and crashes only ever see the old or the new whole file:
    `write` fills a temporary file in the same folder, which is fsynced, renamed over `path`
    (atomic within one POSIX file system), and the folder fsynced so the rename is durable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    try:
        os.fchmod(fd, file_mode())  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def file_mode() -> int:
    """The mode a new file gets under the process's umask (mkstemp makes 0600)."""
    return 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | Path, payload: dict) -> None:
    text = json.dumps(payload, indent=2, default=_jsonable) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def read_json(path: str | Path) -> dict | None:
    """The JSON object in `path`, or None when the file is missing, unreadable or holds something
    else than an object (a list, a number)."""
    try:
        found = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _clean(value: Any) -> Any:
    """Floats that JSON can carry (NaN and inf become null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def strip_stage(metrics: dict[str, float], stage: str) -> dict[str, float]:
    """{'test/acc': 0.9} -> {'acc': 0.9}, keeping only keys of `stage`."""
    prefix = f"{stage}/"
    return {k[len(prefix) :]: _clean(float(v)) for k, v in metrics.items() if k.startswith(prefix)}


def empty_results(experiment: str) -> dict:
    return {
        "status": "failed",
        "experiment": experiment,
        "global_step": 0,
        "epochs": 0,
        "val": {},
        "test": {},
        "best_checkpoint": None,
        "params": 0,
        "wall_seconds": 0.0,
        "throughput": {"samples_per_s": None, "tokens_per_s": None, "mfu": None},
    }


def echo(*renderables: Any) -> None:
    """Print rich renderables to the console and write them as plain text to the run's log
    (bigtrain.log keeps what the console showed: the plan, the data, the results)."""
    import io
    import logging

    from rich.console import Console

    console = Console()
    plain = Console(file=io.StringIO(), width=120, no_color=True, force_terminal=False)
    for renderable in renderables:
        console.print(renderable, markup=False) if isinstance(renderable, str) else console.print(renderable)
        plain.print(renderable, markup=False) if isinstance(renderable, str) else plain.print(renderable)
    logging.getLogger("bigtrain").info("\n%s", plain.file.getvalue().rstrip())


def print_summary(results: dict, run_dir: str | Path) -> None:
    """A rich table of the final metrics (rank zero only; the caller checks)."""
    from rich.table import Table

    table = Table(title=f"bigtrain: {results['experiment']} ({results['status']})", show_lines=False)
    table.add_column("metric")
    table.add_column("val", justify="right")
    table.add_column("test", justify="right")
    keys = list(dict.fromkeys([*results.get("val", {}), *results.get("test", {})]))
    for key in keys:
        v, t = results["val"].get(key), results["test"].get(key)
        table.add_row(key, "" if v is None else f"{v:.4f}", "" if t is None else f"{t:.4f}")
    rate = results["throughput"].get("samples_per_s")
    line = (
        f"steps {results['global_step']}  epochs {results['epochs']}  params {results['params']:,}  "
        f"wall {results['wall_seconds']:.1f}s" + (f"  {rate:,.0f} samples/s" if rate else "")
    )
    echo(table, line, f"run directory: {run_dir}")
