"""The data-source record and what a model learns of the data (DataSpec): torch-free.

A data source is two files: `data/<name>_record.py`, torch-free, whose SOURCE record gives the
`data=` configs it reads, what its samples are, its config checks, its files and how big its
training split is; and `data/<name>.py`, its LightningDataModule and a function
`datamodule(cfg)` that builds it. The schema of its config section is a dataclass of
config/schema_data.py (the bottom layer, read by validation without importing any source).

Everything else (validation, the plan, fingerprints, evaluation on new data) asks the record;
data/__init__.py is the registry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

Check = Callable[[Any], Iterator[str]]
Inputs = Literal["features", "image", "tokens", "audio"]


@dataclass(frozen=True)
class DataSpec:
    """What a model and its loss need to know about the data.

    Language models (task "lm"): input_shape is (seq_len,) token ids, num_classes the vocabulary;
    `byte_level` says that one token is one byte (so bits per byte is loss / ln 2).
    Regression (task "regression"): one output; `target_stats` is the train split's (mean, std)
    of the target, which the module standardises by. Transcription (task "ctc"): num_classes
    labels per frame, the CTC blank first (data/audio_record.py)."""

    input_shape: tuple[int, ...]
    num_classes: int
    task: Literal["binary", "multiclass", "lm", "regression", "ctc"]
    vocab_size: int | None = None
    seq_len: int | None = None
    byte_level: bool = False
    target_stats: tuple[float, float] | None = None

    @property
    def num_outputs(self) -> int:
        """Binary tasks use one logit (sigmoid in the loss), regression one value; multiclass one
        logit per class."""
        return 1 if self.task in ("binary", "regression") else self.num_classes


@dataclass(frozen=True)
class Source:
    """What one data source is, for everything but its LightningDataModule."""

    name: str
    # The data=<choice> configs it reads, and what each one's samples are: flat features (any
    # shape, flattened), images (C, H, W), token windows or audio (log-mels (1, n_mels, frames)).
    choices: Mapping[str, Inputs]
    # The module of its LightningDataModule and `datamodule(cfg)` (imports torch).
    module: str
    # The spec of the configured data without loading it (a table is read once, here).
    spec: Callable[[Any], DataSpec]
    # Its config checks, in order; the first that reports stops the others (each relies on the
    # ones before it: files exist before they are read). Each takes the RunConfig.
    checks: tuple[Check, ...] = ()
    # Training samples, known before loading (None: only the data module can count them).
    train_samples: Callable[[Any], int | None] | None = None
    # Optimizer steps per epoch where the source fixes them itself (token corpora draw windows).
    steps_per_epoch: Callable[[Any], int] | None = None
    # The single files its data section reads (inputs.json fingerprints them), and a listing
    # that stands for a folder of many files.
    files: Callable[[Any], list[Path]] = field(default=lambda d: [])
    listing: Callable[[Any], dict] | None = None
    # Keys of its data section that point `bigtrain eval RUN` at other data than the run's.
    new_data_keys: tuple[str, ...] = ()
    # A table's target decides classification or regression (the metrics' check waits for it).
    task_from_data: bool = False
    # Its loaders batch per process themselves (a data module of your own): no global batch to
    # split, and the plan asks it for its micro-batch.
    batches_itself: bool = False
    # A corpus mixture's rows for the plan: per source its weight, train tokens, the tokens it
    # gives over `total_steps` optimizer steps and the epochs of it that is (data/tokens_record.py).
    plan_sources: Callable[[Any, int | None], list[dict]] | None = None

    def parts(self) -> ModuleType:
        """The source's torch side (imports torch)."""
        return importlib.import_module(self.module)

    def inputs(self, choice: str) -> Inputs:
        """What the samples of data=<choice> are."""
        return self.choices[choice]
