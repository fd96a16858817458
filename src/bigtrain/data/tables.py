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

from bigtrain.config.errors import ConfigError
from bigtrain.config.schema_data import SPLITS, TABLE_SUFFIXES, TabularDataConfig
from bigtrain.data import DataSpec


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
    """Encoded splits: float32 features and int64 class indices, plus what encoding learned."""

    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    classes: list[str]
    feature_names: list[str]

    @property
    def spec(self) -> DataSpec:
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
        _CACHE[key] = _encode(cfg, _raw_splits(cfg, seed))
    return _CACHE[key]


def _columns(cfg: TabularDataConfig, path: str, key: str) -> list[str]:
    if cfg.features is not None:
        return list(cfg.features)
    skip = {cfg.target, cfg.split_column}
    return [c for c in read_header(path, key) if c not in skip]


def _raw_splits(cfg: TabularDataConfig, seed: int) -> dict[str, dict[str, list]]:
    """Column values per split, still as read from the files."""
    files = cfg.files()
    if "all" not in files:
        # Feature columns come from the train file; the val and test files must have them too.
        features = _columns(cfg, files["train"], "data.train_path")
        out = {}
        for s in SPLITS:
            key = f"data.{s}_path"
            out[s] = read_columns(files[s], key, [*features, cfg.target])
            _check_rows(out[s], s, f"{key}={files[s]}")
        return out
    where = f"data.path={cfg.path}"
    features = _columns(cfg, cfg.path, "data.path")
    extra = [cfg.split_column] if cfg.split_column else []
    table = read_columns(cfg.path, "data.path", [*features, cfg.target, *extra])
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
            parts = _stratified_split(targets, cfg.val_fraction, cfg.test_fraction, seed)
        except ValueError as e:  # e.g. a class with a single row cannot be stratified
            raise ConfigError(f"{where}: cannot split it by data.val_fraction/test_fraction: {e}") from e
    out = {s: {c: [v[i] for i in idx] for c, v in table.items()} for s, idx in parts.items()}
    for s in SPLITS:
        _check_rows(out[s], s, where)
    return out


def _stratified_split(targets: np.ndarray, val: float, test: float, seed: int) -> dict[str, np.ndarray]:
    """Row indices of a stratified train/val/test split, as the scikit-learn data sets split."""
    from sklearn.model_selection import train_test_split

    rest, test_idx = train_test_split(
        np.arange(len(targets)), test_size=test, stratify=targets, random_state=seed
    )
    train_idx, val_idx = train_test_split(
        rest, test_size=val / (1.0 - test), stratify=targets[rest], random_state=seed
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
    return out


def _class_order(labels: list[str]) -> list[str]:
    try:
        return sorted(labels, key=float)
    except ValueError:
        return sorted(labels)


def _encode(cfg: TabularDataConfig, raw: dict[str, dict[str, list]]) -> Table:
    where = f"data.path={cfg.path}" if cfg.path else "data.train_path/val_path/test_path"
    features = [c for c in raw["train"] if c != cfg.target]
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

    blocks: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    names: list[str] = []
    for column in features:
        if column in cfg.categorical:
            cats = sorted({str(v) for v in raw["train"][column]})
            for s in SPLITS:
                values = np.array([str(v) for v in raw[s][column]])
                blocks[s].append((values[:, None] == np.array(cats)[None, :]).astype(np.float64))
            names += [f"{column}={c}" for c in cats]
        else:
            cols = {s: _numeric(raw[s][column], column, s, where) for s in SPLITS}
            if cfg.standardize:
                mean, std = cols["train"].mean(), cols["train"].std()
                std = std if std > 0 else 1.0  # a constant column stays constant (zero)
                cols = {s: (v - mean) / std for s, v in cols.items()}
            for s in SPLITS:
                blocks[s].append(cols[s][:, None])
            names.append(column)
    xs = {s: np.concatenate(blocks[s], axis=1).astype(np.float32) for s in SPLITS}
    return Table({s: (xs[s], ys[s]) for s in SPLITS}, classes, names)
