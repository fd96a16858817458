"""Reading CSV and Parquet tables and encoding them into numeric splits, without torch.

Config validation reads the table here, before anything heavy is imported, so errors in the data
(a missing column, a non-numeric value in a numeric column, an empty split, a single class) end
the command with one line before a run directory exists. The tabular data module then takes the
encoded arrays from the same in-process cache.

Splits come from a `split_column` (values train/val/test), from three files, or from a stratified
split by fractions fixed by the run's seed. Everything learned from data is learned from the
training split only: numeric means and standard deviations, the categories of each categorical
column (one-hot; a category unseen in training encodes as all zeros) and the classes of the
target (sorted; numerically when every label is a number).

The target is a class label, or a number to regress (`data.task`; `auto` picks regression for a
numeric target with more than MAX_AUTO_CLASSES distinct values). A regression target keeps its
own units; its training mean and standard deviation travel in the spec (the module regresses
the standardised value and reports metrics in the target's units), and the split by fractions
is a plain shuffled one (there are no classes to stratify by).

CSV values are read as strings (the empty string for a missing value), Parquet values as the
Python values pyarrow gives (None for a missing value).
"""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bigtrain.config.errors import ConfigError, files_in
from bigtrain.config.schema_data import SPLITS, TABLE_SUFFIXES, TabularDataConfig
from bigtrain.data.source import DataSpec

# A numeric target with more distinct values than this is regressed under data.task=auto.
MAX_AUTO_CLASSES = 20


def table_format(path: str, key: str) -> str:
    """'csv' or 'parquet' from the file's suffix; ConfigError naming `key` otherwise."""
    fmt = TABLE_SUFFIXES.get(Path(path).suffix.lower())
    if fmt is None:
        raise ConfigError(f"{key}={path} is neither CSV nor Parquet: name the file *.csv, *.parquet or *.pq")
    if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise ConfigError(
            f"{key}={path} is a Parquet file, which needs pyarrow: pip install 'bigtrain[parquet]'"
        )
    return fmt


def read_header(path: str, key: str) -> list[str]:
    """The column names of a table file (reads only the first line or the Parquet schema)."""
    if Path(path).is_dir():
        raise ConfigError(
            f"{key}={path} is a directory, not a file: give the path of a CSV or Parquet file"
            + files_in(path, TABLE_SUFFIXES)
        )
    if not Path(path).is_file():
        raise ConfigError(f"{key}={path} does not exist: give the path of a CSV or Parquet file")
    if table_format(path, key) == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    with open(path, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), None)
    if not header:
        raise ConfigError(f"{key}={path} is empty: the first line must name the columns")
    return [h.strip() for h in header]


def read_columns(path: str, key: str, columns: list[str]) -> dict[str, list[Any]]:
    """The values of `columns`, one list per column, in file order."""
    if table_format(path, key) == "parquet":
        import pyarrow.parquet as pq

        absent = [c for c in columns if c not in pq.read_schema(path).names]
        if absent:
            raise ConfigError(f"column '{absent[0]}' is not in {key}={path}: add it or set data.features")
        return pq.read_table(path, columns=columns).to_pydict()
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader)]
        absent = [c for c in columns if c not in header]
        if absent:
            raise ConfigError(f"column '{absent[0]}' is not in {key}={path}: add it or set data.features")
        index = [header.index(c) for c in columns]
        out: dict[str, list[Any]] = {c: [] for c in columns}
        for line, row in enumerate(reader, start=2):
            if not row:
                continue  # a blank line, usually the last one
            if len(row) != len(header):
                raise ConfigError(
                    f"{key}={path} line {line} has {len(row)} fields but the header has {len(header)}: fix the file"
                )
            for c, i in zip(columns, index, strict=True):
                out[c].append(row[i].strip())
    return out


# ------------------------------------------------------------------ encoding


@dataclass
class Table:
    """Encoded splits: float32 features and int64 class indices (float32 values for regression),
    plus what encoding learned."""

    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    classes: list[str]
    feature_names: list[str]
    target_stats: tuple[float, float] | None = None  # regression: the train split's mean, std
    # What was learned from the training split, as plain JSON (the run's preprocessing).
    encoding: dict | None = None

    @property
    def spec(self) -> DataSpec:
        if self.target_stats is not None:
            return DataSpec((len(self.feature_names),), 1, "regression", target_stats=self.target_stats)
        n = len(self.classes)
        return DataSpec((len(self.feature_names),), n, "binary" if n == 2 else "multiclass")


# Tables read in this process, by config and seed: data_spec() and the data module share one read.
_CACHE: dict[tuple, Table] = {}


def load_table(cfg: TabularDataConfig, seed: int) -> Table:
    """The encoded splits. Validation calls this (so data errors come before a run directory
    exists); the data module gets the same object from the cache."""
    # The files' modification times are part of the key: an edited file is read again.
    key = (repr(cfg), seed, tuple(Path(p).stat().st_mtime_ns for p in cfg.files().values()))
    if key not in _CACHE:
        _CACHE[key] = _encode(cfg, *_raw_splits(cfg, seed))
    return _CACHE[key]


def _columns(cfg: TabularDataConfig, path: str, key: str) -> list[str]:
    if cfg.features is not None:
        return list(cfg.features)
    skip = {cfg.target, cfg.split_column}
    return [c for c in read_header(path, key) if c not in skip]


def target_task(cfg: TabularDataConfig, values: list) -> str:
    """'classification' or 'regression' for these target values, as data.task says."""
    if cfg.task != "auto":
        return cfg.task
    try:
        distinct = {float(str(v).strip()) for v in values}
    except ValueError:  # a label that is not a number (or is missing): classes
        return "classification"
    return "regression" if len(distinct) > MAX_AUTO_CLASSES else "classification"


def _raw_splits(cfg: TabularDataConfig, seed: int) -> tuple[dict[str, dict[str, list]], str]:
    """Column values per split, still as read from the files, and the task of the target."""
    files = cfg.files()
    if "all" not in files:
        # Feature columns come from the train file; the val and test files must have them too.
        features = _columns(cfg, files["train"], "data.train_path")
        out = {}
        for s in SPLITS:
            key = f"data.{s}_path"
            out[s] = read_columns(files[s], key, [*features, cfg.target])
            _check_rows(out[s], s, f"{key}={files[s]}")
        return out, target_task(cfg, out["train"][cfg.target])
    where = f"data.path={cfg.path}"
    features = _columns(cfg, cfg.path, "data.path")
    extra = [cfg.split_column] if cfg.split_column else []
    table = read_columns(cfg.path, "data.path", [*features, cfg.target, *extra])
    task = target_task(cfg, table[cfg.target])
    if cfg.split_column:
        labels = [str(v).strip() for v in table.pop(cfg.split_column)]
        bad = sorted(set(labels) - set(SPLITS))
        if bad:
            raise ConfigError(
                f"{where}: data.split_column '{cfg.split_column}' holds '{bad[0]}'; its values must be train, val or test"
            )
        parts = {s: np.array([i for i, v in enumerate(labels) if v == s], dtype=np.int64) for s in SPLITS}
    else:
        targets = np.array([str(v) for v in table[cfg.target]])
        try:
            parts = _split(targets, cfg.val_fraction, cfg.test_fraction, seed, task == "classification")
        except ValueError as e:  # e.g. a class with a single row cannot be stratified
            hint = "; a number to regress: data.task=regression" if task == "classification" else ""
            raise ConfigError(
                f"{where}: cannot split it by data.val_fraction/test_fraction: {e}{hint}"
            ) from e
    out = {s: {c: [v[i] for i in idx] for c, v in table.items()} for s, idx in parts.items()}
    for s in SPLITS:
        _check_rows(out[s], s, where)
    return out, task


def _split(targets: np.ndarray, val: float, test: float, seed: int, stratify: bool) -> dict[str, np.ndarray]:
    """Row indices of a train/val/test split, stratified by class as the scikit-learn data sets
    split (or plainly shuffled, for a regression target)."""
    from sklearn.model_selection import train_test_split

    rest, test_idx = train_test_split(
        np.arange(len(targets)), test_size=test, stratify=targets if stratify else None, random_state=seed
    )
    train_idx, val_idx = train_test_split(
        rest, test_size=val / (1.0 - test), stratify=targets[rest] if stratify else None, random_state=seed
    )
    return {"train": train_idx, "val": val_idx, "test": test_idx}


def _check_rows(columns: dict[str, list], split_name: str, where: str) -> None:
    if not next(iter(columns.values())):
        raise ConfigError(f"{where}: the {split_name} split is empty: give it rows (or change the split)")


def _missing(value) -> bool:
    return value is None or value == "" or (isinstance(value, float) and np.isnan(value))


def _numeric(values: list, column: str, split_name: str, where: str) -> np.ndarray:
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            out[i] = np.nan
        if _missing(v) or not np.isfinite(out[i]):
            shown = "an empty value" if _missing(v) else f"'{v}'"
            raise ConfigError(
                f"{where}: numeric column '{column}' has {shown} in row {i + 1} of the {split_name} split; "
                f"fix the file or list the column in data.categorical"
            )
        if abs(out[i]) > FLOAT32_MAX:  # training is float32; the statistics would overflow too
            raise ConfigError(
                f"{where}: numeric column '{column}' has '{v}' in row {i + 1} of the {split_name} split, "
                "beyond float32 (3.4e38): rescale the column in the file"
            )
    return out


FLOAT32_MAX = float(np.finfo(np.float32).max)


def _class_order(labels: list[str]) -> list[str]:
    try:
        return sorted(labels, key=float)
    except ValueError:
        return sorted(labels)


def _regression_targets(
    cfg: TabularDataConfig, raw: dict[str, dict[str, list]], where: str
) -> tuple[dict[str, np.ndarray], tuple[float, float]]:
    """The target's values per split (float32) and the train split's mean and std."""
    ys = {s: _numeric(raw[s][cfg.target], cfg.target, s, where) for s in SPLITS}
    mean, std = float(ys["train"].mean()), float(ys["train"].std())
    return {s: y.astype(np.float32) for s, y in ys.items()}, (mean, std if std > 0 else 1.0)


def _class_targets(cfg: TabularDataConfig, raw: dict[str, dict[str, list]], where: str):
    """The target's class indices per split (int64) and the classes in index order."""
    targets = {s: [str(v).strip() for v in raw[s][cfg.target]] for s in SPLITS}
    classes = _class_order(sorted(set(targets["train"])))
    if len(classes) < 2:
        raise ConfigError(
            f"{where}: target '{cfg.target}' has one class ({classes[0] if classes else 'none'}) in the train split; "
            "a classifier needs at least 2: check data.target"
        )
    index = {c: i for i, c in enumerate(classes)}
    ys = {}
    for s in SPLITS:
        unseen = sorted(set(targets[s]) - set(index))
        if unseen:
            raise ConfigError(
                f"{where}: class '{unseen[0]}' of target '{cfg.target}' is in the {s} split but not in train"
            )
        ys[s] = np.array([index[t] for t in targets[s]], dtype=np.int64)
    return ys, classes


def _encode(cfg: TabularDataConfig, raw: dict[str, dict[str, list]], task: str) -> Table:
    where = f"data.path={cfg.path}" if cfg.path else "data.train_path/val_path/test_path"
    stats = None
    if task == "regression":
        ys, stats = _regression_targets(cfg, raw, where)
        classes: list[str] = []
    else:
        ys, classes = _class_targets(cfg, raw, where)
    features = [c for c in raw["train"] if c != cfg.target]
    encoding = {
        "kind": "table",
        "target": cfg.target,
        "task": task,
        "classes": classes,
        "target_stats": list(stats) if stats else None,
        "columns": learn_columns(cfg, raw["train"], features, where),
    }
    xs = {s: encode_features(encoding, raw[s], s, where) for s in SPLITS}
    return Table({s: (xs[s], ys[s]) for s in SPLITS}, classes, feature_names(encoding), stats, encoding)


def learn_columns(
    cfg: TabularDataConfig, train: dict[str, list], features: list[str], where: str
) -> list[dict]:
    """What encoding learns from the training split, per feature column (plain JSON values):
    the categories of a categorical column, the mean and std of a numeric one."""
    columns = []
    for column in features:
        if column in cfg.categorical:
            columns.append({"name": column, "categories": sorted({str(v) for v in train[column]})})
            continue
        mean, std = 0.0, 1.0
        if cfg.standardize:
            values = _numeric(train[column], column, "train", where)
            mean, std = float(values.mean()), float(values.std())
            std = std if std > 0 else 1.0  # a constant column stays constant (zero)
        columns.append({"name": column, "mean": mean, "std": std})
    return columns


def feature_names(encoding: dict) -> list[str]:
    """The model's inputs in order: numeric columns by name, one-hot ones as column=category."""
    names: list[str] = []
    for col in encoding["columns"]:
        names += [f"{col['name']}={c}" for c in col["categories"]] if "categories" in col else [col["name"]]
    return names


def encode_features(encoding: dict, raw: dict[str, list], split_name: str, where: str) -> np.ndarray:
    """float32 model inputs of raw column values, as the training split's encoding says (a
    category unseen in training encodes as all zeros)."""
    blocks = []
    for col in encoding["columns"]:
        values = raw[col["name"]]
        if "categories" in col:
            text = np.array([str(v) for v in values])
            blocks.append((text[:, None] == np.array(col["categories"])[None, :]).astype(np.float64))
        else:
            numbers = _numeric(values, col["name"], split_name, where)
            blocks.append(((numbers - col["mean"]) / col["std"])[:, None])
    return np.concatenate(blocks, axis=1).astype(np.float32)


def encode_targets(encoding: dict, values: list, where: str) -> np.ndarray:
    """The target column of new rows: float32 values (regression) or class indices."""
    if encoding["task"] == "regression":
        return _numeric(values, encoding["target"], "given", where).astype(np.float32)
    index = {c: i for i, c in enumerate(encoding["classes"])}
    labels = [str(v).strip() for v in values]
    unseen = sorted(set(labels) - set(index))
    if unseen:
        raise ConfigError(
            f"{where}: class '{unseen[0]}' of target '{encoding['target']}' was not seen in training"
        )
    return np.array([index[t] for t in labels], dtype=np.int64)
