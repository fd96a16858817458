"""Schemas of the `data` section: one frozen dataclass per kind of data set.

Fields carry types and range rules only; every value, defaults included, comes from conf/data/.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from bigtrain.config.convert import opt, target_variant, variant
from bigtrain.config.errors import ConfigError, fmt

# Split names a `data.split_column` may hold, and the subfolders an image root may have.
SPLITS = ("train", "val", "test")
TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


@variant("data", "digits", "breast_cancer")
@dataclass(frozen=True)
class SklearnDataConfig:
    """scikit-learn's bundled sets: `digits` (8x8 images, 10 classes), `breast_cancer` (binary)."""

    name: Literal["digits", "breast_cancer"]
    batch_size: int = opt("global batch per optimizer step", gt=0)
    eval_batch_size: int = opt("per-device batch for validation and test", gt=0)
    drop_last: bool = opt("drop the epoch's last, smaller global batch; false = train it as a smaller step")
    val_fraction: float = opt(gt=0.0, lt=1.0)
    test_fraction: float = opt(gt=0.0, lt=1.0)
    standardize: bool = opt("per-feature mean/std of the training split")

    @property
    def image_side(self) -> int | None:
        """The side of its square images (digits: 8x8), None for flat features."""
        return 8 if self.name == "digits" else None


@variant("data", "text", "stdlib_text")
@dataclass(frozen=True)
class TextDataConfig:
    """Text files cut into fixed windows. `text`: the user's files, folders or globs (`paths`);
    `stdlib_text`: the .py source of the running Python's standard library, capped at `max_bytes`.
    Tokens are bytes (vocabulary 256) unless `tokenizer` names a Hugging Face tokenizers JSON file."""

    name: Literal["text", "stdlib_text"]
    paths: list[str] = opt("files, folders or globs (data=text)")
    tokenizer: str | None = opt("a tokenizers JSON file; null = byte-level (vocabulary 256)")
    max_bytes: int | None = opt("read at most this many bytes of text; null = all", gt=0)
    seq_len: int = opt("tokens per training window", gt=0)
    batch_size: int = opt("global batch per optimizer step, in windows", gt=0)
    eval_batch_size: int = opt("per-device batch for validation and test", gt=0)
    drop_last: bool = opt("drop the epoch's last, smaller global batch; false = train it as a smaller step")
    val_fraction: float = opt(gt=0.0, lt=1.0)
    test_fraction: float = opt(gt=0.0, lt=1.0)


def mixture(value: Any, path: str = "data.sources") -> tuple[tuple[str, float], ...]:
    """`data.sources` as ((path, weight), ...): a list of {path: corpus, weight: > 0}."""
    how = f"{path} must be a list of {{path: CORPUS, weight: W}} (e.g. {path}=[{{path:a,weight:0.7}},{{path:b,weight:0.3}}])"
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise ConfigError(how)
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or set(item) != {"path", "weight"}:
            raise ConfigError(f"{path}[{i}]={fmt(item)}: {how}")
        weight = item["weight"]
        if not isinstance(item["path"], str) or not item["path"]:
            raise ConfigError(f"{path}[{i}].path={fmt(item['path'])} must be a corpus folder")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
            raise ConfigError(f"{path}[{i}].weight={fmt(weight)} must be a number greater than 0")
        out.append((item["path"], float(weight)))
    return tuple(out)


@variant("data", "tokens")
@dataclass(frozen=True)
class TokensDataConfig:
    """A pre-tokenised corpus on disk (`bigtrain-tokens write`): a folder of token shards and its
    index (or an older `<path>.bin` + `<path>.json`), or a weighted mixture of such corpora
    (`sources`). Training draws random windows per step."""

    name: Literal["tokens"]
    path: str | None = opt("the corpus folder (or an older .bin / .json) written by bigtrain-tokens")
    sources: Any = opt("a mixture instead of path: [{path: CORPUS, weight: W}, ...]", parse=mixture)
    documents: Literal["cross", "within"] = opt("within: no window crosses an end-of-document token")
    seq_len: int = opt("tokens per training window", gt=0)
    batch_size: int = opt("global batch per optimizer step, in windows", gt=0)
    eval_batch_size: int = opt("per-device batch for validation and test", gt=0)
    val_fraction: float = opt(gt=0.0, lt=1.0)
    test_fraction: float = opt(gt=0.0, lt=1.0)
    steps_per_epoch: int | None = opt("optimizer steps per epoch; null = one pass of tokens", gt=0)
    max_eval_windows: int | None = opt("cap on validation and test windows; null = all", gt=0)


@variant("data", "csv")
@dataclass(frozen=True)
class TabularDataConfig:
    """Your own table (CSV or Parquet): one file split by a column or by fractions, or one file per
    split. Numeric features are standardised with training statistics; categorical ones one-hot."""

    name: Literal["csv"]
    path: str | None = opt("one file holding every split")
    train_path: str | None
    val_path: str | None
    test_path: str | None
    target: str | None = opt("the label column (required)")
    task: Literal["auto", "classification", "regression"] = opt(
        "auto: regression for a numeric target with more than 20 distinct values"
    )
    features: list[str] | None = opt("feature columns; null = every other column")
    categorical: list[str] = opt("feature columns encoded one-hot (categories of the train split)")
    split_column: str | None = opt("column of train/val/test; null = stratified split by fractions")
    standardize: bool
    batch_size: int = opt("global batch per optimizer step", gt=0)
    eval_batch_size: int = opt("per-device batch for validation and test", gt=0)
    drop_last: bool = opt("drop the epoch's last, smaller global batch; false = train it as a smaller step")
    val_fraction: float = opt(gt=0.0, lt=1.0)
    test_fraction: float = opt(gt=0.0, lt=1.0)

    def files(self) -> dict[str, str]:
        """{'all': path} or {'train': ..., 'val': ..., 'test': ...}."""
        if self.path is not None:
            return {"all": self.path}
        return {
            k: v for k, v in zip(SPLITS, (self.train_path, self.val_path, self.test_path), strict=True) if v
        }


@variant("data", "image_folder")
@dataclass(frozen=True)
class ImageFolderDataConfig:
    """Class folders of PNG/JPEG images (root/<class>/*.png), decoded once into memory at
    `image_size` x `image_size`; split by root/train|val|test subfolders or by fractions."""

    name: Literal["image_folder"]
    root: str | None = opt("folder of class folders, or of train/val/test folders (required)")
    image_size: int = opt("images are resized to image_size x image_size", ge=4)
    channels: Literal[1, 3]
    crop_padding: int = opt("random crop after zero padding by this many pixels; 0 = off", ge=0)
    hflip: bool
    normalize: bool
    mean: list[float] | None = opt("per channel; null = from the train split")
    std: list[float] | None = opt("per channel; null = from the train split", gt=0.0)
    max_memory_mb: int = opt("limit on the decoded images held in memory", gt=0)
    batch_size: int = opt("global batch per optimizer step", gt=0)
    eval_batch_size: int = opt("per-device batch for validation and test", gt=0)
    drop_last: bool = opt("drop the epoch's last, smaller global batch; false = train it as a smaller step")
    val_fraction: float = opt(gt=0.0, lt=1.0)
    test_fraction: float = opt(gt=0.0, lt=1.0)

    @property
    def image_side(self) -> int:
        """The side of its square images after resizing."""
        return self.image_size


@variant("data", "audio_folder")
@dataclass(frozen=True)
class AudioFolderDataConfig:
    """Speech: class folders of WAV/FLAC clips (keywords), or a manifest of `path,text` rows
    (transcripts, trained with CTC). Clips are decoded once, resampled, made mono and cut or
    padded to `max_seconds`; log-mel features are computed per batch on the model's device."""

    name: Literal["audio_folder"]
    root: str | None = opt(
        "folder of class folders (or train/val/test folders); with a manifest, where its paths start"
    )
    manifest: str | None = opt("CSV or JSONL of path,text rows: transcription (CTC); null = class folders")
    text_column: str = opt("the manifest's transcript column", nonempty=True)
    split_column: str | None = opt("the manifest's column of train/val/test; null = split by fractions")
    sample_rate: int = opt("clips are resampled to it (Hz)", gt=0)
    resample: bool = opt("resample other rates; false: a clip at another rate is an error")
    downmix: bool = opt("average the channels of stereo clips; false: a clip that is not mono is an error")
    max_seconds: float = opt("clips are cut or zero-padded to this length", gt=0.0)
    n_mels: int = opt("mel bands", gt=0)
    win_ms: float = opt("analysis window (Hann)", gt=0.0)
    hop_ms: float = opt("step between frames", gt=0.0)
    f_min: float = opt("lowest mel frequency (Hz)", ge=0.0)
    f_max: float | None = opt("highest mel frequency (Hz); null = sample_rate / 2", gt=0.0)
    normalize: Literal["dataset", "clip", "none"] = opt(
        "dataset: per-band mean/std of the train split; clip: of each clip; none"
    )
    time_masks: int = opt("SpecAugment: time masks per training clip; 0 = off", ge=0)
    time_mask_frames: int = opt("SpecAugment: widest time mask, in frames", gt=0)
    freq_masks: int = opt("SpecAugment: frequency masks per training clip; 0 = off", ge=0)
    freq_mask_bands: int = opt("SpecAugment: widest frequency mask, in mel bands", gt=0)
    max_memory_mb: int = opt("limit on the decoded clips held in memory (float32)", gt=0)
    batch_size: int = opt("global batch per optimizer step", gt=0)
    eval_batch_size: int = opt("per-device batch for validation and test", gt=0)
    drop_last: bool = opt("drop the epoch's last, smaller global batch; false = train it as a smaller step")
    val_fraction: float = opt(gt=0.0, lt=1.0)
    test_fraction: float = opt(gt=0.0, lt=1.0)

    @property
    def transcribed(self) -> bool:
        """Transcripts (a manifest, CTC) rather than classes."""
        return self.manifest is not None

    @property
    def samples(self) -> int:
        """Samples per clip after cutting or padding."""
        return round(self.max_seconds * self.sample_rate)

    @property
    def hop(self) -> int:
        """Samples between frames."""
        return max(1, round(self.hop_ms * self.sample_rate / 1000))

    @property
    def frames(self) -> int:
        """Log-mel frames per clip (centred frames: one per hop, plus one)."""
        return 1 + self.samples // self.hop


@target_variant("data")
@dataclass(frozen=True)
class CustomDataConfig:
    """Your own pytorch_lightning.LightningDataModule, named by `_target_` (docs/extending.md):
    every other key of the section is an argument of its constructor. It batches its own data
    (its loaders' batch is per process) and tells its classes by `num_classes`."""

    name: Literal["custom"]
    target: str = opt("the dotted path of the class (or function) that builds the data module")
    arguments: Any = opt("the constructor's arguments: every key of the section but _target_")
