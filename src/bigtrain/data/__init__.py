"""LightningDataModules. Each one exposes `spec` (input shape, classes, task) before `setup`, so
models and the plan can be built without loading any data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class DataSpec:
    """What a model and its loss need to know about the data.

    Language models (task "lm"): input_shape is (seq_len,) token ids, num_classes the vocabulary;
    `byte_level` says that one token is one byte (so bits per byte is loss / ln 2).
    Regression (task "regression"): one output; `target_stats` is the train split's (mean, std)
    of the target, which the module standardises by."""

    input_shape: tuple[int, ...]
    num_classes: int
    task: Literal["binary", "multiclass", "lm", "regression"]
    vocab_size: int | None = None
    seq_len: int | None = None
    byte_level: bool = False
    target_stats: tuple[float, float] | None = None

    @property
    def num_outputs(self) -> int:
        """Binary tasks use one logit (sigmoid in the loss), regression one value; multiclass one
        logit per class."""
        return 1 if self.task in ("binary", "regression") else self.num_classes


LM_DATA = {"text", "stdlib_text", "tokens"}

# scikit-learn's bundled sets, known without loading them.
SKLEARN_SPECS = {
    "digits": DataSpec(input_shape=(1, 8, 8), num_classes=10, task="multiclass"),
    "breast_cancer": DataSpec(input_shape=(30,), num_classes=2, task="binary"),
}


def data_spec(cfg) -> DataSpec:
    """The spec of the configured data, without loading it (a user's table is read here once,
    since its class count and one-hot width come from the data)."""
    if cfg.data.name in LM_DATA:
        from bigtrain.data.codec import lm_spec

        return lm_spec(cfg.data)
    # User data (tables and image folders).
    if cfg.data.name == "csv":
        from bigtrain.data.tables import load_table

        return load_table(cfg.data, cfg.seed).spec
    if cfg.data.name == "image_folder":
        from bigtrain.data.images import image_spec

        return image_spec(cfg.data)
    if cfg.data.name == "custom":  # your own data module, by _target_: it may read one batch
        from bigtrain.data.custom import custom_spec

        return custom_spec(cfg.data)
    return SKLEARN_SPECS[cfg.data.name]


def build_datamodule(cfg):
    """The LightningDataModule for a validated RunConfig."""
    name = cfg.data.name
    if name == "custom":  # your own, by _target_: the instance validation built and checked
        from bigtrain.data.custom import take

        return take(cfg.data)
    if name == "tokens":
        from bigtrain.data.tokens import TokensDataModule

        return TokensDataModule(cfg.data, seed=cfg.seed)
    if name == "image_folder":
        from bigtrain.data.images import ImageFolderDataModule

        return ImageFolderDataModule(cfg.data, seed=cfg.seed)
    if name in LM_DATA:
        from bigtrain.data.text import TextDataModule as Module
    elif name == "csv":  # user tables
        from bigtrain.data.tabular import TabularDataModule as Module
    else:
        from bigtrain.data.sklearn import SklearnDataModule as Module
    return Module(cfg.data, seed=cfg.seed)
