"""results.json: the run's contract with scripts, sweeps and people; and the closing table.

Keys are stable: add, never rename. Written atomically (temporary file, then rename), so a
reader never sees half a file.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

RESULTS_FILE = "results.json"


def read_json(path: str | Path) -> dict | None:
    """The JSON object in `path`, or None when the file is missing, unreadable or holds something
    else than an object (a list, a number)."""
    try:
        found = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _clean(value: Any) -> Any:
    """Floats that JSON can carry (NaN and inf become null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def strip_stage(metrics: dict[str, float], stage: str) -> dict[str, float]:
    """{'test/acc': 0.9} -> {'acc': 0.9}, keeping only keys of `stage`."""
    prefix = f"{stage}/"
    return {k[len(prefix) :]: _clean(float(v)) for k, v in metrics.items() if k.startswith(prefix)}


@dataclass(slots=True)  # a misspelt block is an AttributeError, not a key that is never written
class Results:
    """What results.json holds, typed: the run fills it as it goes and runs/train.py writes it
    once, at the end (`as_json`). The optional blocks appear in the file only where the run
    produced them (a trick that was on, a signal that stopped it, an error)."""

    status: str = "failed"  # completed, interrupted, requeued or failed
    experiment: str = ""  # the run's name
    global_step: int = 0
    epochs: int = 0
    val: dict[str, float | None] = field(default_factory=dict)
    test: dict[str, float | None] = field(default_factory=dict)
    best_checkpoint: str | None = None
    params: int = 0
    wall_seconds: float = 0.0
    throughput: dict[str, float | None] = field(
        default_factory=lambda: {"samples_per_s": None, "tokens_per_s": None, "mfu": None}
    )
    slurm_job_id: str | None = None
    tags: list[str] = field(default_factory=list)
    steps_per_call: int = 1  # kept for readers of older results: one optimizer step per batch
    # Optional blocks (left out of the file while None).
    data: dict | None = None  # the data module's statistics
    finders: dict | None = None  # the learning-rate and batch-size finders' results
    confusion_matrix: list | None = None
    resumed: int | None = None
    memory: dict | None = None
    samples: Any = None  # a language model's last generated samples
    timing: dict | None = None
    precision: dict | None = None
    nonfinite: dict | None = None
    ema: dict | None = None
    swa: dict | None = None
    signal: str | None = None  # the signal that interrupted the run
    error: str | None = None  # what failed it

    OPTIONAL: ClassVar[tuple[str, ...]] = (
        "data", "finders", "confusion_matrix", "resumed", "memory", "samples", "timing",
        "precision", "nonfinite", "ema", "swa", "signal", "error",
    )  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        """The results.json object (and the dict `bigtrain.train` returns)."""
        out = asdict(self)
        return {k: v for k, v in out.items() if not (k in self.OPTIONAL and v is None)}


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
