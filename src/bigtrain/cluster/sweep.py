"""The summary of a multirun: one row per job with its overrides, status and final metrics.

A Hydra callback (registered in conf/hydra/default.yaml), so it runs at the end of every
multirun whatever the launcher (basic, joblib, submitit) or sweeper (grid, Optuna). It reads
what each job left on disk (.hydra/overrides.yaml and results.json), so a job that died
without results still gets a row, and writes <sweep dir>/summary.csv, best job first by
callbacks.checkpoint.monitor.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

SUMMARY_FILE = "summary.csv"


def _job_dirs(sweep_dir: Path) -> list[Path]:
    """Every job folder under the sweep folder (those holding .hydra/overrides.yaml)."""
    found = {p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")}
    return sorted(found, key=lambda p: [int(s) if s.isdigit() else s for s in p.relative_to(sweep_dir).parts])


def _monitored(results: dict, monitor: str) -> float | None:
    stage, _, key = monitor.partition("/")
    value = results.get(stage, {}).get(key) if isinstance(results.get(stage), dict) else None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def collect(sweep_dir: str | Path, monitor: str = "val/loss", mode: str = "min") -> list[dict[str, Any]]:
    """One row per job, best first by `monitor` (`mode` min or max); jobs without a value last."""
    sweep_dir = Path(sweep_dir)
    rows = []
    for job in _job_dirs(sweep_dir):
        overrides = OmegaConf.load(job / ".hydra" / "overrides.yaml")
        path = job / "results.json"
        results = json.loads(path.read_text()) if path.is_file() else {"status": "missing"}
        row: dict[str, Any] = {
            "job": str(job.relative_to(sweep_dir)),
            "overrides": " ".join(str(o) for o in overrides),
            "status": results.get("status", "missing"),
            "resumed": results.get("resumed", 0),
            "global_step": results.get("global_step"),
            monitor: _monitored(results, monitor),
        }
        for stage in ("val", "test"):
            for key, value in (results.get(stage) or {}).items():
                row.setdefault(f"{stage}/{key}", value)
        rows.append(row)
    sign = -1.0 if mode == "max" else 1.0
    rows.sort(key=lambda r: (r[monitor] is None, sign * r[monitor] if r[monitor] is not None else 0.0))
    return rows


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def print_table(rows: list[dict[str, Any]], monitor: str, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    # The table shows only the overrides that differ between jobs (summary.csv has them all).
    split = [row["overrides"].split() for row in rows]
    shared = set.intersection(*(set(o) for o in split)) if len(rows) > 1 else set()
    table = Table(title=title)
    for column in ("#", "job", "overrides", "status", "resumed", "global_step", monitor):
        # fold, never cut: a value is read from the table (e.g. the best optim.lr to type again)
        left = column in ("job", "overrides", "status")
        table.add_column(column, justify="left" if left else "right", overflow="fold")
    for rank, row in enumerate(rows, 1):
        value = row[monitor]
        varying = " ".join(o for o in row["overrides"].split() if o not in shared)
        cells = [row["job"], varying, row["status"], row["resumed"], row["global_step"]]
        table.add_row(
            str(rank), *("" if c is None else str(c) for c in cells), "" if value is None else f"{value:.4f}"
        )
    Console().print(table)


class SweepSummary(Callback):
    """Writes summary.csv and prints the table when a multirun ends. When it starts, registers
    bigtrain's SLURM launcher with Hydra where the config asks for it (cluster/submit.py)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from bigtrain.cluster.submit import register_launcher

        register_launcher(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        monitor = OmegaConf.select(config, "callbacks.checkpoint.monitor", default="val/loss")
        mode = OmegaConf.select(config, "callbacks.checkpoint.mode", default="min")
        rows = collect(sweep_dir, monitor, mode)
        if not rows:
            return
        write_csv(rows, sweep_dir / SUMMARY_FILE)
        print_table(rows, monitor, f"sweep {sweep_dir} ({len(rows)} jobs, best {monitor} first)")
