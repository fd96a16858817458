"""Speech clips as a data source (data/source.py): class folders of WAV/FLAC files (keywords), or
a manifest of `path,text` rows (transcripts, for a CTC head). Validation lists the clips and reads
every file's header with soundfile (an unreadable or empty file, a rate that would need resampling
with data.resample=false, a stereo clip with data.downmix=false: each is one line naming the file),
nothing is decoded. Its data module: data/audio.py.

Samples are log-mel spectrograms (1, n_mels, frames), computed per batch on the model's device
from the waveforms the loaders hand out. A transcript's characters are its labels: index 0 is
the CTC blank and index 1 the space (the word separator, also when no transcript has one), then
the other characters of the manifest in sorted order.
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bigtrain.config import SPLITS, RunConfig
from bigtrain.config.errors import ConfigError, first_line
from bigtrain.config.schema_data import AudioFolderDataConfig
from bigtrain.data.images_record import stratified_train_size
from bigtrain.data.source import DataSpec, Source

EXTENSIONS = frozenset({".wav", ".flac"})
BLANK, SPACE = 0, 1  # label indices of the CTC blank and of the word separator
INSTALL = "pip install 'bigtrain[audio]'"


def missing_extra(resample: bool = True) -> str | None:
    """The audio packages that do not import (not installed, or soundfile without its
    libsndfile), as the one line that says how to add them."""
    absent = []
    for name in ["soundfile", *(["soxr"] if resample else [])]:
        try:
            importlib.import_module(name)
        except (ImportError, OSError):
            absent.append(name)
    if absent:
        return f"data=audio_folder needs {' and '.join(absent)}: {INSTALL}"
    return None


# ------------------------------------------------------------------ class folders


def split_folders(d: AudioFolderDataConfig) -> dict[str, Path] | None:
    """{'train': root/train, 'val': ..., 'test': ...} when the root is split by folders."""
    root = Path(d.root)
    return {s: root / s for s in SPLITS} if (root / "train").is_dir() else None


def _subfolders(folder: str | Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def class_names(d: AudioFolderDataConfig) -> list[str]:
    """The class folders (of root/train when split by folders), sorted: class index order."""
    folders = split_folders(d)
    return _subfolders(folders["train"] if folders else d.root)


def clips_in(folder: Path) -> list[Path]:
    """The audio files of one folder, sorted."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS and p.is_file())


def class_counts(folder: str | Path) -> list[int]:
    return [len(clips_in(Path(folder) / c)) for c in _subfolders(folder)]


# ------------------------------------------------------------------ manifests


def manifest_base(d: AudioFolderDataConfig) -> Path:
    """Where the manifest's relative paths start: data.root, else the manifest's folder."""
    return Path(d.root) if d.root is not None else Path(d.manifest).parent


def read_manifest(path: str | Path, text_column: str, split_column: str | None) -> list[dict[str, str]]:
    """The rows of a CSV or JSONL manifest as {'path', 'text', 'split'} (split '' when there is
    no split column); ConfigError naming the file and the fix otherwise."""
    path = Path(path)
    wanted = ["path", text_column, *([split_column] if split_column else [])]
    try:
        with open(path, encoding="utf-8", newline="") as f:
            if path.suffix.lower() in (".jsonl", ".json"):
                rows = [json.loads(line) for line in f if line.strip()]
            else:
                rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        reason = first_line(e)
        raise ConfigError(
            f"cannot read manifest {path} ({reason}): give a CSV or JSONL file of path,text rows"
        ) from e
    if not rows:
        raise ConfigError(f"manifest {path} has no rows: give at least one path,text row")
    for n, row in enumerate(rows, 1):
        missing = [k for k in wanted if not isinstance(row, dict) or row.get(k) in (None, "")]
        if missing:
            raise ConfigError(
                f"manifest {path}: row {n} has no {missing[0]!r}: every row needs {', '.join(wanted)}"
                + (" (data.text_column, data.split_column name the columns)" if missing[0] != "path" else "")
            )
    out = [
        {"path": str(r["path"]), "text": str(r[text_column]).strip(), "split": str(r.get(split_column) or "")}
        for r in rows
    ]
    bad = next((r for r in out if split_column and r["split"] not in SPLITS), None)
    if bad is not None:
        raise ConfigError(
            f"manifest {path}: {split_column}={bad['split']!r} for {bad['path']}: use train, val or test"
        )
    return out


def manifest_rows(d: AudioFolderDataConfig) -> list[dict[str, str]]:
    return read_manifest(d.manifest, d.text_column, d.split_column)


def fraction_split(n: int, val: float, test: float, seed: int) -> dict[str, list[int]]:
    """Row indices per split of n unlabelled rows, drawn with the run's seed (the same on every
    machine and rank): the first round(n*test) of a permutation test, the next round(n*val) val."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(n).tolist()
    n_test, n_val = round(n * test), round(n * val)
    return {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}


def manifest_splits(d: AudioFolderDataConfig, rows: list[dict[str, str]], seed: int) -> dict[str, list[int]]:
    """Row indices per split: by the split column, or by fractions."""
    if d.split_column:
        return {s: [i for i, r in enumerate(rows) if r["split"] == s] for s in SPLITS}
    return fraction_split(len(rows), d.val_fraction, d.test_fraction, seed)


def vocabulary(rows: list[dict[str, str]]) -> list[str]:
    """The labels of transcripts: blank (''), space, then every other character, sorted."""
    chars = sorted({c for r in rows for c in r["text"]} - {" "})
    return ["", " ", *chars]


# ------------------------------------------------------------------ spec and sizes


def audio_spec(d: AudioFolderDataConfig) -> DataSpec:
    """(1, n_mels, frames) log-mels; classes from folder names, or the transcripts' characters."""
    shape = (1, d.n_mels, d.frames)
    if d.transcribed:
        return DataSpec(shape, len(vocabulary(manifest_rows(d))), "ctc")
    n = len(class_names(d))
    return DataSpec(shape, n, "binary" if n == 2 else "multiclass")


def _train_samples(cfg: Any) -> int | None:
    d = cfg.data
    if d.transcribed:
        return len(manifest_splits(d, manifest_rows(d), cfg.seed)["train"])
    if d.root is None:
        return None
    folders = split_folders(d)
    if folders:
        return sum(class_counts(folders["train"]))
    return stratified_train_size(class_counts(d.root), d.val_fraction, d.test_fraction, cfg.seed)


def all_clips(cfg: Any) -> list[Path]:
    """Every clip the data reads (class folders, or the manifest's rows)."""
    d = cfg.data
    if d.transcribed:
        base = manifest_base(d)
        return [base / r["path"] for r in manifest_rows(d)]
    folders = split_folders(d)
    tops = list(folders.values()) if folders else [Path(d.root)]
    return [clip for top in tops for c in _subfolders(top) for clip in clips_in(top / c)]


# ------------------------------------------------------------------ checks


def check_audio_extra(cfg: RunConfig) -> Iterator[str]:
    line = missing_extra(cfg.data.resample)
    if line is not None:
        yield line


def check_audio_layout(cfg: RunConfig) -> Iterator[str]:
    """The manifest or the root folder and its class folders, and the feature settings."""
    d = cfg.data
    if d.f_max is not None and d.f_max > d.sample_rate / 2:
        yield f"data.f_max={d.f_max:g} is above half of data.sample_rate={d.sample_rate}: lower it (or null)"
    if d.f_min >= (d.f_max or d.sample_rate / 2):
        yield f"data.f_min={d.f_min:g} must be below data.f_max: lower it"
    if round(d.win_ms * d.sample_rate / 1000) < 2:
        yield f"data.win_ms={d.win_ms:g} is under two samples at {d.sample_rate} Hz: raise it"
    if d.transcribed:
        if not Path(d.manifest).is_file():
            yield f"data.manifest={d.manifest} does not exist: give a CSV or JSONL file of path,text rows"
        elif d.root is not None and not Path(d.root).is_dir():
            yield f"data.root={d.root} is not a folder: give the folder the manifest's paths start from, or null"
        return
    if d.root is None:
        yield "data=audio_folder needs a folder: set data.root=DIR (class folders of .wav/.flac inside), or data.manifest=FILE"
        return
    if not os.path.isdir(d.root):
        yield f"data.root={d.root} is not a folder: give the folder that holds the class folders"
        return
    folders = split_folders(d)
    if folders:
        missing = [s for s in SPLITS if not folders[s].is_dir()]
        if missing:
            yield (
                f"data.root={d.root} has a train/ folder but no {'/, '.join(missing)}/: add it, "
                "or put the class folders directly in data.root to split by fractions"
            )
            return
    for folder in folders.values() if folders else [Path(d.root)]:
        classes = _subfolders(folder)
        if len(classes) < 2:
            yield f"{folder} holds {len(classes)} class folder(s): audio_folder needs at least 2 (root/<class>/*.wav)"
            return
        for c in classes:
            if not clips_in(folder / c) and (folder.name == "train" or not folders):
                yield (
                    f"class folder {folder / c} holds no .wav/.flac clips: add clips, or remove the folder "
                    "(it would be a class without samples)"
                )
                return


def check_audio_files(cfg: RunConfig) -> Iterator[str]:
    """Every clip's header (the first bad one is named), the splits and the memory they need."""
    d = cfg.data
    try:
        clips = all_clips(cfg)
        splits = manifest_splits(d, manifest_rows(d), cfg.seed) if d.transcribed else None
    except ConfigError as e:
        yield str(e)
        return
    if splits is not None:
        empty = [s for s in SPLITS if not splits[s]]
        if empty:
            yield f"data.manifest={d.manifest} leaves the {empty[0]} split empty: add rows to it"
            return
    for path in clips:
        if (line := probe_audio(path, d)) is not None:
            yield line
            return
    need = len(clips) * d.samples * 4
    if need > d.max_memory_mb * 2**20:
        yield (
            f"{len(clips)} clips of data.max_seconds={d.max_seconds:g} at {d.sample_rate} Hz decode to "
            f"{need / 2**20:.0f} MiB, over data.max_memory_mb={d.max_memory_mb}: raise it or shorten data.max_seconds"
        )


def probe_audio(path: Path, d: Any) -> str | None:
    """What is wrong with one clip, from its header (nothing decoded): None when it is usable."""
    import soundfile as sf

    if not path.is_file():
        return f"audio file {path} does not exist: fix its path in the manifest, or remove the row"
    if path.stat().st_size == 0:
        return f"audio file {path} is empty: remove or replace the file"
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, TypeError... for broken files
        reason = first_line(e)
        return f"cannot read audio {path}: {reason}; remove or replace the file"
    if info.frames <= 0:
        return f"audio file {path} holds no samples: remove or replace the file"
    if info.samplerate != d.sample_rate and not d.resample:
        return (
            f"audio file {path} is {info.samplerate} Hz, not data.sample_rate={d.sample_rate}: "
            "set data.resample=true, or give clips at that rate"
        )
    if info.channels > 1 and not d.downmix:
        return (
            f"audio file {path} has {info.channels} channels but data.downmix=false asks for mono clips: "
            "set data.downmix=true to average them, or give mono clips"
        )
    return None


# ------------------------------------------------------------------ fingerprints


def _files(d: Any) -> list[Path]:
    return [Path(d.manifest)] if d.manifest is not None else []


def audio_listing(d: Any) -> dict:
    """The listing entry of the clips' folder: every clip's path below it and its size, sorted."""
    root = str(manifest_base(d)) if d.transcribed else d.root
    rows = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [x for x in dirs if not x.startswith(".")]
        for name in names:
            if Path(name).suffix.lower() in EXTENSIONS:
                path = Path(folder) / name
                rows.append((path.relative_to(root).as_posix(), path.stat().st_size))
    rows.sort()
    text = "".join(f"{rel}\t{size}\n" for rel, size in rows)
    sha = hashlib.sha256(text.encode()).hexdigest()
    total = sum(s for _, s in rows)
    return {"what": "clips", "path": str(root), "files": len(rows), "bytes": total, "sha256": sha}


SOURCE = Source(
    name="audio",
    choices={"audio_folder": "audio"},
    module="bigtrain.data.audio",
    spec=lambda cfg: audio_spec(cfg.data),
    checks=(check_audio_extra, check_audio_layout, check_audio_files),
    train_samples=_train_samples,
    files=_files,
    listing=audio_listing,
    new_data_keys=("root", "manifest"),
)
