"""metrics.csv and hparams.yaml in the run directory, kept whole across resumes.

Hand-written on Lightning's public `Logger` base because Lightning's CSVLogger cannot do two
things a resumable run needs: it deletes an existing metrics.csv when it starts in a folder that
is not empty (a resumed run would lose its history), and it offers no public way to start from
the columns already in the file. This logger appends to the file of a resumed run, and when a
new column appears it rewrites the file atomically with the widened header, so no earlier row
is ever lost and a reader never sees half a file.
"""

from __future__ import annotations

import csv
import io
from argparse import Namespace
from pathlib import Path
from typing import Any

from pytorch_lightning.core.saving import save_hparams_to_yaml
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only

from bigtrain.util import atomic_write

METRICS_FILE = "metrics.csv"
HPARAMS_FILE = "hparams.yaml"


class RunCSVLogger(Logger):
    def __init__(self, run_dir: str | Path, append: bool = False, flush_every: int = 100) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS_FILE
        self.flush_every = flush_every
        self.rows: list[dict[str, Any]] = []
        self.columns: list[str] = []
        self.calls = 0
        # A fresh run starts a new file at its first save; a resumed one keeps what is there.
        self.started = append and self.path.is_file()
        if self.started:
            with open(self.path, newline="") as f:
                self.columns = next(csv.reader(f), [])

    @property
    def name(self) -> str:
        return ""

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return str(self.run_dir)

    @property
    def log_dir(self) -> str:
        return str(self.run_dir)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        params = vars(params) if isinstance(params, Namespace) else dict(params)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_hparams_to_yaml(self.run_dir / HPARAMS_FILE, params)

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        row = {k: float(v.item()) if hasattr(v, "item") else v for k, v in metrics.items()}
        row["step"] = step if step is not None else len(self.rows)
        self.rows.append(row)
        self.calls += 1
        if self.calls % self.flush_every == 0:
            self.save()

    @rank_zero_only
    def save(self) -> None:
        if not self.rows:
            return
        new = sorted({k for row in self.rows for k in row} - set(self.columns))
        if new or not self.started:
            self.columns = sorted({*self.columns, *new})
            old = self._read_rows() if self.started else []
            self._write_all(old + self.rows)
            self.started = True
        else:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.columns).writerows(self.rows)
        self.rows = []

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()

    def _read_rows(self) -> list[dict[str, Any]]:
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def _write_all(self, rows: list[dict[str, Any]]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.path, lambda f: f.write(buffer.getvalue().encode()))
