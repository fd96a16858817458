"""Config checks of the data: its pairing with the model family, shapes against the model, and
the user's files (tables, image folders, text, token files, tokenizers).

Each check takes the RunConfig and yields one line per problem, naming the fix (runs/validate.py
runs them in order). Image folders are listed and every image's header is probed with Pillow
(an unreadable file or a decompression bomb is named before the run, nothing is decoded); a
user's table is read and encoded with numpy (data/tables.py), since its errors need its values;
it is read once per process. A text corpus of byte tokens is sized from its files' sizes.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

from bigtrain.config import (
    LM_DATA,
    REGRESSION_METRICS,
    SPLITS,
    ConfigError,
    ImageFolderDataConfig,
    RunConfig,
    TabularDataConfig,
    did_you_mean,
    files_in,
)


def check_fractions(cfg: RunConfig) -> Iterator[str]:
    """The held-out fractions must leave a training split."""
    d = cfg.data
    val, test = getattr(d, "val_fraction", None), getattr(d, "test_fraction", None)
    if val is not None and test is not None and val + test >= 1.0:
        yield (
            f"data.val_fraction={val} + data.test_fraction={test} = {val + test:g} leaves no training "
            "data: lower them so that they sum below 1 (0.1 each is usual)"
        )


def check_seq_len(cfg: RunConfig) -> Iterator[str]:
    """Training windows must fit the model's context. Needs matching families (check_families)."""
    d, m = cfg.data, cfg.model
    if d.name in LM_DATA and d.seq_len > m.max_seq_len:
        yield f"data.seq_len={d.seq_len} is longer than model.max_seq_len={m.max_seq_len}: lower data.seq_len"


def check_lm_files(cfg: RunConfig) -> Iterator[str]:
    """Text files and globs, token files, and the tokenizer file and package."""
    import glob
    import importlib.util

    d = cfg.data
    if d.name == "text":
        if not d.paths:
            yield "data=text needs input files: set data.paths=[file.txt,folder/,'docs/*.md']"
        for p in d.paths:
            if not (os.path.exists(p) or glob.glob(p, recursive=True)):
                yield f"data.paths: {p} matches no file: give existing files, folders or globs"
    if d.name == "tokens":
        yield from _token_files(d.path)
    if getattr(d, "tokenizer", None) is not None:
        if importlib.util.find_spec("tokenizers") is None:
            yield "data.tokenizer needs the tokenizers package: pip install 'bigtrain[text]'"
        if os.path.isdir(d.tokenizer):
            yield (
                f"data.tokenizer={d.tokenizer} is a directory, not a file: give a tokenizers JSON file"
                + files_in(d.tokenizer, [".json"])
            )
        elif not os.path.isfile(d.tokenizer):
            yield f"data.tokenizer={d.tokenizer} does not exist: give a tokenizers JSON file"


def _token_files(path: str) -> Iterator[str]:
    """data=tokens reads <base>.bin and <base>.json, named by either file."""
    if os.path.isdir(path):
        yield (
            f"data.path={path} is a directory, not a file: give the .bin or .json file that "
            f"bigtrain-tokens write made{files_in(path, ['.bin', '.json'])}"
        )
        return
    base = path[: -len(".json")] if path.endswith(".json") else path.removesuffix(".bin")
    missing = [base + ext for ext in (".bin", ".json") if not os.path.isfile(base + ext)]
    if missing:
        yield f"data.path={path}: {missing[0]} not found; write it with bigtrain-tokens write"


def check_corpus_size(cfg: RunConfig) -> Iterator[str]:
    """A text corpus holds a window in every split and one global batch of training windows:
    counted from the files' sizes for byte tokens (with a tokenizer only an empty corpus is
    known now; the data module counts the tokens). A dry run reads no data: its plan is made for
    any corpus. Needs the files (check_lm_files) and fractions that leave a training split
    (check_fractions)."""
    from bigtrain.data.corpus import byte_windows, expand_paths, window_problems

    d = cfg.data
    if d.name not in ("text", "stdlib_text") or cfg.dry_run:
        return
    if d.name == "stdlib_text":
        # The standard library's source is tens of MB: only a data.max_bytes can make it small.
        if d.tokenizer is None and d.max_bytes is not None:
            yield from window_problems(d, byte_windows(d, [], total=d.max_bytes))
        return
    files = expand_paths(list(d.paths))
    if d.tokenizer is None:
        yield from window_problems(d, byte_windows(d, files))
    elif not any(f.stat().st_size for f in files):
        yield f"the files of data.paths={list(d.paths)} are empty: add text"


def check_image_folder(cfg: RunConfig) -> Iterator[str]:
    """The root folder and its class folders; per-channel mean and std."""
    d = cfg.data
    if not isinstance(d, ImageFolderDataConfig):
        return
    problems = list(_image_root(d))
    yield from problems or _image_files(d)
    for key, values in (("mean", d.mean), ("std", d.std)):
        if values is not None and len(values) != d.channels:
            yield f"data.{key} needs {d.channels} values (one per channel); got {len(values)}"


def _image_root(d: ImageFolderDataConfig) -> Iterator[str]:
    if d.root is None:
        yield "data=image_folder needs a folder: set data.root=DIR (class folders inside)"
        return
    if not os.path.isdir(d.root):
        yield f"data.root={d.root} is not a folder: give the folder that holds the class folders"
        return
    folders = [d.root]
    if os.path.isdir(os.path.join(d.root, "train")):
        missing = [s for s in SPLITS if not os.path.isdir(os.path.join(d.root, s))]
        if missing:
            yield (
                f"data.root={d.root} has a train/ folder but no {'/, '.join(missing)}/: add it, "
                "or put the class folders directly in data.root to split by fractions"
            )
            return
        folders = [os.path.join(d.root, s) for s in SPLITS]
    for folder in folders:
        classes = [e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")]
        if len(classes) < 2:
            yield f"{folder} holds {len(classes)} class folder(s): image_folder needs at least 2 (root/<class>/*.png)"


def _image_files(d: ImageFolderDataConfig) -> Iterator[str]:
    """Every class folder of the training images holds images, every split some; each image's
    header is read (the first unreadable one is named). Needs a valid layout (_image_root)."""
    from bigtrain.data.batches import IMAGE_EXTENSIONS

    root = Path(d.root)
    split = (root / "train").is_dir()
    for folder in [root / s for s in SPLITS] if split else [root]:
        classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
        count = 0
        for name in classes:
            files = sorted(p for p in (folder / name).glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files and (folder.name == "train" or not split):
                yield (
                    f"class folder {folder / name} holds no .png/.jpg images: add images, or remove the "
                    "folder (it would be a class without samples)"
                )
                return
            count += len(files)
            for path in files:
                if (line := probe_image(path)) is not None:
                    yield line
                    return
        if not count:
            yield f"{folder} holds no .png/.jpg images: the {folder.name} split needs some"
            return


def probe_image(path: Path) -> str | None:
    """What is wrong with an image file, from its header and Pillow's integrity check (no pixel
    is decoded): None when it is readable and within Pillow's decompression-bomb limit."""
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as im:
                im.verify()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            size = str(e).split(", could")[0]
            return f"image {path} is too large to decode safely ({size}): shrink it or remove it"
        except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError... for broken files
            reason = (str(e).splitlines() or [type(e).__name__])[0]
            return f"cannot read image {path}: {reason}; remove or replace the file"
    return None


def check_table(cfg: RunConfig) -> Iterator[str]:
    """A user's table: which files, which columns; then reads and encodes it (numpy only), so
    errors in the data come before a run directory exists. The data module reuses the result."""
    d = cfg.data
    if not isinstance(d, TabularDataConfig):
        return
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
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
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


def check_train_batches(cfg: RunConfig) -> Iterator[str]:
    """A training split smaller than one global batch would never train a full step (none at all
    with data.drop_last), and a trainer.limit_train_batches fraction that keeps no batch of the
    epoch none at all: refused where the split size is known now, from the fractions of a
    scikit-learn set, a table's rows, an image folder's listing (data/batches.py). Needs an even
    batch split and readable user files (check_batch_split, check_image_folder, check_table).
    Limits of zero epochs or steps are check_stopping's (training/checks.py)."""
    from bigtrain.data.batches import limit_keeps_nothing, too_few_samples, train_split_size

    samples = train_split_size(cfg)
    if samples is None:
        return
    line = too_few_samples(cfg, samples) or limit_keeps_nothing(cfg, samples)
    if line is not None:
        yield line


def check_data_target(cfg: RunConfig) -> Iterator[str]:
    """data._target_ imports, is a LightningDataModule, and takes the data's arguments."""
    d = cfg.data
    if d.name != "custom":
        return
    import pytorch_lightning as pl

    from bigtrain.targets import target_problems

    yield from target_problems(
        d.target, d.arguments, "data", pl.LightningDataModule, "pytorch_lightning.LightningDataModule"
    )


def check_data_contract(cfg: RunConfig) -> Iterator[str]:
    """The data module, built (its __init__ only), has num_classes and the loaders a run uses.
    Needs a target that imports and fits its arguments (check_data_target)."""
    if cfg.data.name != "custom":
        return
    from bigtrain.data.custom import contract_problems, held

    yield from contract_problems(held(cfg.data).dm, cfg.data.target, test=cfg.test_after_fit)


def check_custom_data_uses(cfg: RunConfig) -> Iterator[str]:
    """What needs bigtrain's own data: the finders resize its in-memory batches."""
    f = cfg.tricks.finders
    if cfg.data.name == "custom" and (f.lr.enabled or f.batch_size.enabled):
        yield (
            "tricks.finders need bigtrain's own in-memory data, and data._target_ is a data module of "
            "yours: set tricks.finders.lr.enabled=false tricks.finders.batch_size.enabled=false"
        )
