"""The documents of the tokens writer's inputs, one at a time: text files, JSONL, Parquet, Arrow, `datasets`.

A plain file is one document (its bytes). A row of a table is one document: its `text_field`
(default "text") in `.jsonl` files (a JSON object per line), `.parquet` / `.pq` files (read a
row group at a time) and `.arrow` files (Arrow IPC, file or stream). With `datasets`, a folder
saved by `Dataset.save_to_disk` (load_from_disk) or files of one format through
`datasets.load_dataset(<format>, data_files=...)`, its cache in a folder the writer owns and
removes; nothing is downloaded (HF_DATASETS_OFFLINE is set unless the environment sets it).
Every source is read in a fixed order, so a corpus is the same however many workers tokenise it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bigtrain.config.errors import ConfigError, first_line

TABLES = {".jsonl": "jsonl", ".parquet": "parquet", ".pq": "parquet", ".arrow": "arrow"}
HF_FORMATS = ("json", "parquet", "arrow", "csv", "text")
ROWS_PER_READ = 1024


@dataclass(frozen=True)
class Inputs:
    """What the writer reads: files (each by its suffix), or through `datasets`."""

    files: tuple[Path, ...] = ()
    text_field: str = "text"
    hf_format: str | None = None  # datasets.load_dataset(hf_format, data_files=files)
    hf_dataset: Path | None = None  # datasets.load_from_disk(hf_dataset)
    split: str = "train"

    def fingerprint_files(self) -> list[Path]:
        """The files whose bytes make the documents (a saved dataset: every file under it)."""
        if self.hf_dataset is not None:
            return sorted(p for p in self.hf_dataset.rglob("*") if p.is_file())
        return list(self.files)


def listing(files: list[Path]) -> dict:
    """{count, bytes, sha256} of the inputs' paths, sizes and modification times (stats only): a
    half-written corpus resumes only while this is unchanged."""
    sha, total = hashlib.sha256(), 0
    for f in files:
        st = f.stat()
        sha.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        total += st.st_size
    return {"count": len(files), "bytes": total, "sha256": sha.hexdigest()}


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            sha.update(block)
    return sha.hexdigest()


def iter_documents(inputs: Inputs, cache_dir: Path) -> Iterator[str | bytes]:
    """Every document of `inputs`, in order: bytes for plain files, str for table rows."""
    if inputs.hf_dataset is not None or inputs.hf_format is not None:
        yield from _hf_documents(inputs, cache_dir)
        return
    for f in inputs.files:
        kind = TABLES.get(f.suffix.lower())
        if kind is None:
            yield f.read_bytes()
        elif kind == "jsonl":
            yield from _jsonl(f, inputs.text_field)
        else:
            yield from _arrow_rows(f, kind, inputs.text_field)


def _field_error(where: str, field: str, what: str) -> ConfigError:
    return ConfigError(f"{where}: {what}: name the text column with --text-field")


def _jsonl(path: Path, field: str) -> Iterator[str]:
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ConfigError(
                    f"{path}:{n} is not UTF-8 ({e.reason} at byte {e.start} of the line): JSONL files are UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise ConfigError(f"{path}:{n} is not a JSON object ({e}): one object per line") from None
            if not isinstance(row, dict) or not isinstance(row.get(field), str):
                raise _field_error(f"{path}:{n}", field, f"no text field {field!r}")
            yield row[field]


def _arrow_reader(path: Path, kind: str):
    """(column names, column types, batches) of a Parquet or Arrow file, read lazily."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if kind == "parquet":
        reader = pq.ParquetFile(path)
        schema = reader.schema_arrow
        return (
            schema.names,
            schema.types,
            lambda columns: reader.iter_batches(batch_size=ROWS_PER_READ, columns=columns),
        )
    with open(path, "rb") as fh:
        is_file = fh.read(6) == b"ARROW1"
    reader = pa.ipc.open_file(path) if is_file else pa.ipc.open_stream(path)
    batches = (reader.get_batch(i) for i in range(reader.num_record_batches)) if is_file else iter(reader)
    return reader.schema.names, reader.schema.types, lambda columns: batches


def _open_table(path: Path, kind: str, field: str):
    """A Parquet or Arrow file's batches of `field`, its schema checked; one line otherwise."""
    try:
        import pyarrow as pa
    except ImportError:
        raise ConfigError(
            f"{path}: Parquet and Arrow files need pyarrow: pip install 'bigtrain[parquet]'"
        ) from None
    try:
        names, types, batches = _arrow_reader(path, kind)
    except (OSError, pa.ArrowException) as e:
        raise ConfigError(f"{path} cannot be read as {kind} ({first_line(e)})") from None
    if field not in names:
        raise _field_error(str(path), field, f"no column {field!r} (columns: {', '.join(names)})")
    _check_text_type(str(path), field, types[names.index(field)])
    return batches([field])


def _check_text_type(where: str, field: str, arrow_type) -> None:
    """A text column is a string column (its nulls are skipped); anything else is one line."""
    import pyarrow as pa

    if not (pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)):
        raise _field_error(where, field, f"{field!r} holds {arrow_type}, not text")


def _arrow_rows(path: Path, kind: str, field: str) -> Iterator[str]:
    import pyarrow as pa

    batches = _open_table(path, kind, field)
    try:
        for batch in batches:
            for text in batch.column(field).to_pylist():
                if text is not None:
                    yield text
    except (OSError, pa.ArrowException) as e:
        raise ConfigError(f"{path} cannot be read as {kind} ({first_line(e)})") from None


def check_tables(inputs: Inputs) -> None:
    """Before any work: every JSONL file's first row, and every Parquet / Arrow file's schema,
    has the text field (one line naming the file otherwise)."""
    if inputs.hf_dataset is not None or inputs.hf_format is not None:
        return
    for f in inputs.files:
        kind = TABLES.get(f.suffix.lower())
        if kind == "jsonl":
            next(_jsonl(f, inputs.text_field), None)
        elif kind is not None:
            _open_table(f, kind, inputs.text_field)


def _hf_documents(inputs: Inputs, cache_dir: Path) -> Iterator[str]:
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        import datasets
    except ImportError:
        raise ConfigError(
            "--hf-format and --hf-dataset need the datasets package: pip install 'bigtrain[datasets]'"
        ) from None
    datasets.disable_progress_bars()
    where = str(inputs.hf_dataset or inputs.files[0])
    try:
        ds = _hf_dataset(datasets, inputs, cache_dir)
    except ConfigError:
        raise
    except (OSError, ValueError, datasets.exceptions.DatasetGenerationError) as e:
        raise ConfigError(f"{where} cannot be read by datasets ({first_line(e)})") from None
    if inputs.text_field not in ds.column_names:
        raise _field_error(
            where,
            inputs.text_field,
            f"no column {inputs.text_field!r} (columns: {', '.join(ds.column_names)})",
        )
    _check_text_type(where, inputs.text_field, ds.data.schema.field(inputs.text_field).type)
    for batch in ds.select_columns([inputs.text_field]).iter(batch_size=ROWS_PER_READ):
        for text in batch[inputs.text_field]:
            if text is not None:
                yield text


def _hf_dataset(datasets, inputs: Inputs, cache_dir: Path):
    """The dataset of a save_to_disk folder (its --split), or of files through load_dataset."""
    if inputs.hf_dataset is None:
        files = [str(f) for f in inputs.files]
        return datasets.load_dataset(
            inputs.hf_format, data_files=files, split="train", cache_dir=str(cache_dir)
        )
    ds = datasets.load_from_disk(str(inputs.hf_dataset))
    if isinstance(ds, datasets.DatasetDict):
        if inputs.split not in ds:
            raise ConfigError(
                f"{inputs.hf_dataset} has no split {inputs.split!r} (it has {', '.join(ds)}): choose one with --split"
            )
        ds = ds[inputs.split]
    return ds
