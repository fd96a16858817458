"""results.json: the run's contract with scripts, sweeps and people; and the closing table.

Keys are stable: add, never rename. Written atomically (temporary file, then rename), so a
reader never sees half a file.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.json"


def write_json_atomic(path: str | Path, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, default=_jsonable)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: str | Path) -> dict | None:
    """The JSON object in `path`, or None when the file is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


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


def print_summary(results: dict, run_dir: str | Path) -> None:
    """A rich table of the final metrics (rank zero only; the caller checks)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bigtrain: {results['experiment']} ({results['status']})", show_lines=False)
    table.add_column("metric")
    table.add_column("val", justify="right")
    table.add_column("test", justify="right")
    keys = list(dict.fromkeys([*results.get("val", {}), *results.get("test", {})]))
    for key in keys:
        v, t = results["val"].get(key), results["test"].get(key)
        table.add_row(key, "" if v is None else f"{v:.4f}", "" if t is None else f"{t:.4f}")
    console = Console()
    console.print(table)
    rate = results["throughput"].get("samples_per_s")
    console.print(
        f"steps {results['global_step']}  epochs {results['epochs']}  params {results['params']:,}  "
        f"wall {results['wall_seconds']:.1f}s" + (f"  {rate:,.0f} samples/s" if rate else "")
    )
    console.print(f"run directory: {run_dir}")
