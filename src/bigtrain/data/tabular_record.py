"""Your own table (CSV or Parquet) as a data source (data/source.py): its checks (files, columns,
then the table read and encoded with numpy, so errors in the data come before a run directory
exists; it is read once per process and the data module reuses it). Reading and encoding:
data/tables.py; its data module: data/tabular.py."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bigtrain.config import (
    REGRESSION_METRICS,
    SPLITS,
    ConfigError,
    RunConfig,
    TabularDataConfig,
    did_you_mean,
)
from bigtrain.config.errors import first_line
from bigtrain.data.source import Source


def check_table(cfg: RunConfig) -> Iterator[str]:
    """A user's table: which files, which columns; then reads and encodes it (numpy only), so
    errors in the data come before a run directory exists. The data module reuses the result."""
    d = cfg.data
    problems = list(_table_options(d))
    if problems:
        yield from problems
        return
    problems = list(_table_columns(d))
    if problems:
        yield from problems
        return
    from bigtrain.data.tables import load_table

    try:
        table = load_table(d, cfg.seed)  # raises ConfigError naming the file, row and column
    except (UnicodeDecodeError, csv.Error) as e:
        yield _not_csv_files(d, e)
        return
    if table.target_stats is not None and cfg.tricks.label_smoothing > 0:
        yield (
            f"tricks.label_smoothing={cfg.tricks.label_smoothing} smooths class labels, but target "
            f"'{d.target}' is regressed: drop it (or data.task=classification)"
        )
    if table.target_stats is None:
        bad = [n for n in cfg.metrics.names if n in REGRESSION_METRICS]
        if bad:
            yield (
                f"metrics.names has {bad[0]}, a regression metric, but target '{d.target}' holds "
                f"{len(table.classes)} classes: use metrics=default (or data.task=regression)"
            )


def _not_csv_files(d: TabularDataConfig, e: Exception) -> str:
    """The error line for the table file that `e` (raised while reading the table) comes from."""
    for split_name, path in d.files().items():
        key = "data.path" if split_name == "all" else f"data.{split_name}_path"
        if (line := _not_csv(key, path, e)) is not None:
            return line
    raise e


def _not_csv(key: str, path: str, e: Exception) -> str | None:
    """The error line for a table file that is not UTF-8 CSV text (`e` was raised reading one);
    None when `path` is not the file at fault."""
    if Path(path).suffix.lower() != ".csv":
        return None
    if isinstance(e, csv.Error):
        return f"{key}={path} is not a CSV table ({e}): fix the file"
    try:
        Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as bad:
        where = f"byte 0x{bad.object[bad.start]:02x} at offset {bad.start}"
        return f"{key}={path} is not UTF-8 text ({where}): save the table as UTF-8 CSV (or as Parquet)"
    return None


def _not_parquet(key: str, path: str, e: Exception) -> str:
    """The error line for a table file whose header cannot be read for another reason than
    its text (`e`): a damaged Parquet file, most likely."""
    reason = first_line(e)
    what = "a Parquet file" if Path(path).suffix.lower() != ".csv" else "a readable table"
    return f"{key}={path} is not {what} ({reason}): fix or rewrite the file"


def _table_options(d: TabularDataConfig) -> Iterator[str]:
    split_paths = [d.train_path, d.val_path, d.test_path]
    if d.path is not None and any(split_paths):
        yield "set either data.path or data.train_path/val_path/test_path, not both"
    elif d.path is None and not any(split_paths):
        yield "data=csv needs a file: set data.path=FILE (or data.train_path, val_path and test_path)"
    elif d.path is None and not all(split_paths):
        missing = [f"data.{k}_path" for k, v in zip(SPLITS, split_paths, strict=True) if not v]
        yield f"separate split files need all three: set {', '.join(missing)}"
    if d.split_column is not None and d.path is None:
        yield "data.split_column applies to one file (data.path): drop it for separate split files"
    if d.target is None:
        yield "data=csv needs the label column: set data.target=COLUMN"


def _table_columns(d: TabularDataConfig) -> Iterator[str]:
    from bigtrain.data.tables import read_header

    first: tuple[str, list[str]] | None = None  # the file the features come from (all or train)
    for split_name, path in d.files().items():
        key = "data.path" if split_name == "all" else f"data.{split_name}_path"
        try:
            columns = read_header(path, key)
        except ConfigError:
            raise
        except (ValueError, OSError, csv.Error) as e:  # not text, not CSV, not Parquet
            yield _not_csv(key, path, e) or _not_parquet(key, path, e)
            return
        first = first or (f"{key}={path}", columns)
        wanted = [("data.target", d.target)]
        wanted += [("data.split_column", d.split_column)] if d.split_column else []
        wanted += [("data.features", c) for c in d.features or []]
        wanted += [("data.categorical", c) for c in d.categorical]
        missing = [(option, column) for option, column in wanted if column not in columns]
        for option, column in missing:
            yield (
                f"{option}: column '{column}' is not in {key}={path}{did_you_mean(column, columns)}; "
                f"its columns are {', '.join(columns)}"
            )
        if missing:
            return
    if d.features is not None and d.target in d.features:
        yield f"data.features lists the target '{d.target}': remove it from data.features"
    if d.features == []:
        yield "data.features is empty: list the feature columns, or set data.features=null for every other column"
    elif d.features is None and first is not None and not set(first[1]) - {d.target, d.split_column}:
        yield (
            f"{first[0]} has no feature columns, only {', '.join(first[1])}: add the feature columns "
            "to the table (every column but data.target and data.split_column is one)"
        )
    stray = [c for c in d.categorical if d.features is not None and c not in d.features]
    if stray:
        yield f"data.categorical column '{stray[0]}' is not in data.features: add it there too"
    if d.target in d.categorical:
        yield f"data.categorical lists the target '{d.target}': remove it"


def _table(cfg: Any):
    from bigtrain.data.tables import load_table

    return load_table(cfg.data, cfg.seed)


SOURCE = Source(
    name="tabular",
    choices={"csv": "features"},
    module="bigtrain.data.tabular",
    spec=lambda cfg: _table(cfg).spec,
    checks=(check_table,),
    train_samples=lambda cfg: len(_table(cfg).splits["train"][1]),
    files=lambda d: [Path(p) for p in d.files().values()],
    new_data_keys=("path", "train_path", "val_path", "test_path"),
    task_from_data=True,
)
