"""A run's preprocessing as plain JSON, and raw inputs (rows, images, text) turned into model inputs
by it, exactly as training turned its data.

Every data module's `preprocessing()` says what training learned from its data; train() saves it
in the run directory (preprocessing.json) and in every checkpoint, next to `spec`, the DataSpec
the model was built for. Kinds:

- table: the target, the task, the classes (or the regression target's mean and std) and per
  feature column its categories (one-hot) or its mean and std (tables.encode_features applies it,
  the same function that encoded the training split).
- image: channels, image size, the value a white pixel has in the data's units (`scale`: 1 for
  image folders, 16 for scikit-learn's digits), the mean and std `per` channel (or per pixel),
  and the class names. Files are decoded and resized by images.decode, as in training.
- text: the tokenizer (null for bytes, else a tokenizers JSON file kept in the run directory).
- audio: decoding (sample rate, max_seconds, resample, downmix), the log-mel front end's
  settings and the train split's per-band mean and std, and the class names or, for
  transcripts, the labels' characters (`vocabulary`). Clips are decoded by audio.decode and
  turned into log-mels by the same LogMel as in training.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from bigtrain.config.errors import ConfigError, first_line
from bigtrain.data.source import DataSpec

FILE = "preprocessing.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def with_spec(dm: Any) -> dict:
    """The data module's preprocessing with its spec: what a saved model needs to predict."""
    spec = dataclasses.asdict(dm.spec)
    return {"spec": spec, **dm.preprocessing()}


def spec_of(prep: dict) -> DataSpec:
    """The DataSpec saved in a preprocessing dict."""
    s = dict(prep["spec"])
    s["input_shape"] = tuple(s["input_shape"])
    if s.get("target_stats") is not None:
        s["target_stats"] = tuple(s["target_stats"])
    return DataSpec(**s)


# What each kind of preprocessing holds besides `kind` and `spec` (what the readers below use).
KIND_KEYS = {
    "table": ("target", "task", "classes", "columns"),
    "image": ("channels", "image_size", "scale", "per", "mean", "std"),
    "text": ("tokenizer",),
    "audio": (
        "sample_rate",
        "max_seconds",
        "n_mels",
        "win_ms",
        "hop_ms",
        "f_min",
        "f_max",
        "normalize",
        "mean",
        "std",
    ),
}


def problem(prep: Any) -> str | None:
    """What keeps `prep` from being a run's preprocessing (its shape, not its values), or None."""
    if not isinstance(prep, dict):
        return f"a JSON {type(prep).__name__}, not an object"
    kind = prep.get("kind")
    if kind not in KIND_KEYS:
        return f"kind={kind!r} is none of {', '.join(KIND_KEYS)}"
    missing = [k for k in ("spec", *KIND_KEYS[kind]) if k not in prep]
    if missing:
        return f"no {', '.join(missing)}"
    try:
        spec_of(prep)
    except (TypeError, ValueError, KeyError):
        return "its spec is not a data spec"
    columns = prep.get("columns", [])
    if not (isinstance(columns, list) and all(isinstance(c, dict) and "name" in c for c in columns)):
        return "its columns are not a list of named columns"
    return None


def read_file(path: str | Path) -> dict:
    """A run's preprocessing.json, checked (problem); ConfigError naming the file otherwise."""
    import json

    fix = "restore it from a copy of the run"
    try:
        prep = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # not UTF-8, not JSON
        reason = first_line(e)
        raise ConfigError(f"{path} cannot be read ({reason}): {fix}") from e
    found = problem(prep)
    if found is not None:
        raise ConfigError(f"{path} is not a run's preprocessing ({found}): {fix}")
    return prep


def class_names(prep: dict) -> list[str] | None:
    return prep.get("classes") or None


# ------------------------------------------------------------------ tables


def read_rows(prep: dict, path: str | Path, key: str = "input") -> tuple[np.ndarray, np.ndarray | None, int]:
    """(inputs, targets or None when the file has no target column, rows) of a table file;
    `key` names where the user gave it (`input` of predict, `data.path` of eval)."""
    from bigtrain.data.tables import encode_features, encode_targets, read_columns, read_header

    where = f"{path}"
    header = read_header(str(path), key)
    columns = [c["name"] for c in prep["columns"]]
    target = prep["target"] if prep["target"] in header else None
    raw = read_columns(str(path), key, [*columns, *([target] if target else [])])
    rows = len(next(iter(raw.values()))) if raw else 0
    if rows == 0:
        raise ConfigError(f"{path} has no rows: give it at least one")
    x = encode_features(prep, raw, "given", where)
    y = encode_targets(prep, raw[target], where) if target else None
    return x, y, rows


# ------------------------------------------------------------------ images


def image_files(path: str | Path) -> list[Path]:
    """An image file, or the images below a folder (sorted)."""
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        if files:
            return files
        raise ConfigError(f"{path} holds no .png/.jpg images: give an image file or a folder of them")
    raise ConfigError(f"{path} does not exist: give an image file or a folder of images")


def read_images(prep: dict, files: list[Path]):
    """Model inputs (N, C, S, S) float32 of image files, normalised as training normalised."""
    import torch

    from bigtrain.data.images import decode

    size = SimpleNamespace(image_size=prep["image_size"], channels=prep["channels"])
    x = decode(files, size).float() / 255.0 * prep["scale"]
    mean = torch.tensor(prep["mean"], dtype=torch.float32)
    std = torch.tensor(prep["std"], dtype=torch.float32)
    if prep["per"] == "channel":
        mean, std = mean[None, :, None, None], std[None, :, None, None]
    else:  # one value per pixel (scikit-learn's digits)
        mean, std = mean.reshape(1, *x.shape[1:]), std.reshape(1, *x.shape[1:])
    return (x - mean) / std


# ------------------------------------------------------------------ audio


def audio_files(path: str | Path) -> list[Path]:
    """An audio file, or the .wav/.flac files below a folder (sorted)."""
    from bigtrain.data.audio_record import EXTENSIONS

    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix.lower() in EXTENSIONS and f.is_file())
        if files:
            return files
        raise ConfigError(f"{path} holds no .wav/.flac clips: give an audio file or a folder of them")
    raise ConfigError(f"{path} does not exist: give an audio file or a folder of clips")


def read_audio(prep: dict, files: list[Path], chunk: int = 256):
    """Model inputs (N, 1, n_mels, frames) of audio files: decoded, resampled and cut as in
    training, log-mels normalised by the train split's statistics. Files are checked first (an
    unreadable, empty or unusable one is one ConfigError line naming it)."""
    import torch

    from bigtrain.data.audio import decode, front_end
    from bigtrain.data.audio_record import missing_extra, probe_audio

    d = SimpleNamespace(**{k: prep[k] for k in ("sample_rate", "max_seconds")})
    d.resample, d.downmix = prep.get("resample", True), prep.get("downmix", True)
    if (line := missing_extra(d.resample)) is not None:
        raise ConfigError(line)
    for path in files:
        if (line := probe_audio(Path(path), d)) is not None:
            raise ConfigError(line)
    frontend = front_end(prep)
    with torch.no_grad():
        parts = [frontend(decode(files[i : i + chunk], d)) for i in range(0, len(files), chunk)]
    return torch.cat(parts)


# ------------------------------------------------------------------ text


def codec(prep: dict, run_dir: Path | None):
    """The text codec of a language-model run (its tokenizer file from the run directory)."""
    from bigtrain.data.codec import Codec

    tokenizer = prep.get("tokenizer")
    if tokenizer is None:
        return Codec(None)
    path = Path(run_dir or ".") / tokenizer
    if not path.is_file():
        raise ConfigError(f"{path} is missing: the run's tokenizer must stay in its run directory")
    return Codec(str(path))
