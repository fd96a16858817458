"""Your own table (CSV or Parquet) as an in-memory LightningDataModule: the splits encoded by
`tables.load_table` (see there for splitting and encoding), served by the loaders of
SklearnDataModule (global batch per optimizer step, evaluation sharded over ranks)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from bigtrain.config import TabularDataConfig
from bigtrain.data.sklearn import SklearnDataModule
from bigtrain.data.tables import load_table


def datamodule(cfg) -> TabularDataModule:
    """The data module of a validated RunConfig (data/tabular_record.py is its record)."""
    return TabularDataModule(cfg.data, seed=cfg.seed)


class TabularDataModule(SklearnDataModule):
    """The in-memory loaders of SklearnDataModule (global batches, sharded evaluation) over a table."""

    def __init__(self, cfg: TabularDataConfig, seed: int) -> None:
        pl.LightningDataModule.__init__(self)  # the parent's __init__ looks up scikit-learn specs
        self.cfg, self.seed = cfg, seed
        self.table = load_table(cfg, seed)
        self.spec = self.table.spec
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def class_names(self) -> list[str] | None:
        """The target's values in class index order (Table.classes); None for regression."""
        return [str(c) for c in self.table.classes] or None

    def preprocessing(self) -> dict:
        """The encoding learned from the training split (data/preprocess.py)."""
        return dict(self.table.encoding)

    def describe(self) -> str | None:
        """The console line about a regression target (None: classes, described as any)."""
        if self.table.target_stats is None:
            return None
        sizes = ", ".join(f"{k} {n}" for k, n in self.sizes().items())
        mean, std = self.table.target_stats
        return f"data: csv: {sizes}; regression on '{self.cfg.target}' (train mean {mean:.4g}, std {std:.4g})"

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = {
                k: (torch.from_numpy(x), torch.from_numpy(y)) for k, (x, y) in self.table.splits.items()
            }
