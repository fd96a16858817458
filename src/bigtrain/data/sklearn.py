"""scikit-learn's bundled data sets as a LightningDataModule: real data, no download.

- digits: 1797 8x8 grey images of handwritten digits, 10 classes; delivered as (1, 8, 8).
- breast_cancer: 569 tumours, 30 features, binary (malignant / benign).

Splits are stratified and fixed by the run's seed. Standardisation uses the mean and standard
deviation of the training split only, so no statistic of validation or test data leaks in.
"""

from __future__ import annotations

import functools

import numpy as np
import pytorch_lightning as pl
import torch

from bigtrain.config import SklearnDataConfig
from bigtrain.data.sklearn_record import SPECS
from bigtrain.data.tensors import TensorLoader, TrainPosition, data_topology


def datamodule(cfg) -> SklearnDataModule:
    """The data module of a validated RunConfig whose data is one of scikit-learn's sets."""
    return SklearnDataModule(cfg.data, seed=cfg.seed)


def load_arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets

    if name == "digits":
        bunch = datasets.load_digits()
    elif name == "breast_cancer":
        bunch = datasets.load_breast_cancer()
    else:
        raise ValueError(f"unknown scikit-learn data set {name!r}")
    return bunch.data.astype(np.float32), bunch.target.astype(np.int64)


@functools.cache
def target_names(name: str) -> list[str]:
    """scikit-learn's names of the classes of data set `name`, in class index order."""
    from sklearn import datasets

    loaders = {"digits": datasets.load_digits, "breast_cancer": datasets.load_breast_cancer}
    if name not in loaders:
        raise ValueError(f"unknown scikit-learn data set {name!r}")
    return [str(n) for n in loaders[name]().target_names]


@functools.cache
def feature_names(name: str) -> list[str]:
    """scikit-learn's names of the feature columns of data set `name`."""
    from sklearn import datasets

    return [str(n) for n in getattr(datasets, f"load_{name}")().feature_names]


def split(x: np.ndarray, y: np.ndarray, val: float, test: float, seed: int) -> dict[str, tuple]:
    """Stratified train/val/test split, the same for the same seed on every machine and rank."""
    from sklearn.model_selection import train_test_split

    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=test, stratify=y, random_state=seed)
    val_of_rest = val / (1.0 - test)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val_of_rest, stratify=y_rest, random_state=seed
    )
    return {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}


class SklearnDataModule(TrainPosition, pl.LightningDataModule):
    def __init__(self, cfg: SklearnDataConfig, seed: int) -> None:
        super().__init__()
        self.cfg, self.seed = cfg, seed
        self.spec = SPECS[cfg.name]
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._resume_at: dict | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        x, y = load_arrays(self.cfg.name)
        parts = split(x, y, self.cfg.val_fraction, self.cfg.test_fraction, self.seed)
        width = parts["train"][0].shape[1]
        self.feature_mean, self.feature_std = np.zeros(width, np.float32), np.ones(width, np.float32)
        if self.cfg.standardize:
            mean = parts["train"][0].mean(axis=0)
            std = parts["train"][0].std(axis=0)
            std[std == 0] = 1.0  # digits has pixels that are 0 in every training image
            self.feature_mean, self.feature_std = mean, std
            parts = {k: ((xs - mean) / std, ys) for k, (xs, ys) in parts.items()}
        shape = self.spec.input_shape
        self.splits = {
            k: (torch.from_numpy(np.ascontiguousarray(xs)).reshape(-1, *shape), torch.from_numpy(ys))
            for k, (xs, ys) in parts.items()
        }

    @property
    def class_names(self) -> list[str] | None:
        """Names of the classes in index order, for plots ("0".."9"; "malignant", "benign")."""
        return target_names(self.cfg.name)

    def preprocessing(self) -> dict:
        """What a prediction needs (data/preprocess.py): digits are 8x8 images with values 0-16
        standardised per pixel; breast cancer is a table of its 30 named measurements."""
        mean, std = self.feature_mean.tolist(), self.feature_std.tolist()
        classes = self.class_names
        if self.cfg.name == "digits":
            return {
                "kind": "image",
                "channels": 1,
                "image_size": 8,
                "scale": 16.0,
                "per": "pixel",
                "mean": mean,
                "std": std,
                "classes": classes,
            }
        columns = [
            {"name": n, "mean": m, "std": s}
            for n, m, s in zip(feature_names(self.cfg.name), mean, std, strict=True)
        ]
        return {
            "kind": "table",
            "target": "target",
            "task": "classification",
            "classes": classes,
            "target_stats": None,
            "columns": columns,
        }

    def sizes(self) -> dict[str, int]:
        return {k: len(v[1]) for k, v in self.splits.items()}

    def class_balance(self) -> dict[str, list[int]]:
        n = self.spec.num_classes
        return {k: torch.bincount(v[1], minlength=n).tolist() for k, v in self.splits.items()}

    def _topology(self) -> tuple[int, int, int]:
        return data_topology(self.trainer)

    def train_dataloader(self) -> TensorLoader:
        self.follow_training()
        rank, world, accum = self._topology()
        loader = TensorLoader(
            self.splits["train"],
            self.cfg.batch_size,
            shuffle=True,
            seed=self.seed,
            epoch=self._epoch,
            position=self._position,
            rank=rank,
            world_size=world,
            accumulation=accum,
            drop_last=self.cfg.drop_last,
        )
        return self.resume_loader(loader)

    def _eval_loader(self, split_name: str) -> TensorLoader:
        rank, world, _ = self._topology()
        return TensorLoader(
            self.splits[split_name], self.cfg.eval_batch_size, shuffle=False, rank=rank, world_size=world
        )

    def val_dataloader(self) -> TensorLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> TensorLoader:
        return self._eval_loader("test")
