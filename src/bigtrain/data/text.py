"""Text for language models: the user's files (`data=text`) or the Python standard library's own
source (`data=stdlib_text`), as token windows held in memory.

Tokens are bytes by default (vocabulary 256: no download, works offline, any language); a local
Hugging Face `tokenizers` JSON file is the option for subword vocabularies.

The token stream (files in sorted order, joined by a blank line) is split contiguously into
[train | val | test], so the split is the same on every machine and no window straddles two
splits. Each split is cut into non-overlapping windows of seq_len + 1 tokens: inputs are the
first seq_len, targets the last seq_len (the next token at every position). Training windows are
shuffled per epoch and cut into micro-batches by TensorLoader, with the same global-batch
semantics as every other data set; a run resumed from a mid-epoch checkpoint goes on with the
windows an uninterrupted run sees (data/tensors.TrainPosition).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from bigtrain.config import ConfigError
from bigtrain.data.codec import BYTE_VOCAB, SEPARATOR, Codec, lm_spec  # noqa: F401 (re-exported)
from bigtrain.data.corpus import (  # noqa: F401 (re-exported)
    expand_paths,
    iter_stdlib_files,
    read_text,
    split_bounds,
    stdlib_files,
    window_problems,
)
from bigtrain.data.tensors import TensorLoader, TrainPosition, data_topology


def source_files(cfg) -> Iterable[Path]:
    return iter_stdlib_files() if cfg.name == "stdlib_text" else expand_paths(list(cfg.paths))


def windows(tokens: np.ndarray, seq_len: int) -> np.ndarray:
    """Non-overlapping (N, seq_len + 1) windows; consecutive windows share one boundary token."""
    n = (len(tokens) - 1) // seq_len
    if n <= 0:
        return np.zeros((0, seq_len + 1), dtype=tokens.dtype)
    idx = np.arange(n)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
    return tokens[idx]


def unigram_loss(train_targets: np.ndarray, eval_targets: np.ndarray, vocab: int) -> float:
    """Cross-entropy (nats per token) of `eval_targets` under train-token frequencies with add-one
    smoothing: the loss of a model that ignores context. A language model must beat it."""
    counts = np.bincount(train_targets.ravel(), minlength=vocab).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[eval_targets.ravel()].mean())


def token_dtype(vocab: int) -> torch.dtype:
    """The smallest storage for ids (the module casts to int64 per batch)."""
    return torch.uint8 if vocab <= 256 else torch.int16 if vocab <= 32767 else torch.int32


def datamodule(cfg) -> TextDataModule:
    """The data module of a validated RunConfig (data/text_record.py is its record)."""
    return TextDataModule(cfg.data, seed=cfg.seed)


class TextDataModule(TrainPosition, pl.LightningDataModule):
    class_names: list[str] | None = None  # next-token prediction: the classes are the vocabulary

    def preprocessing(self) -> dict:
        """What generation needs (data/preprocess.py): the tokenizer, copied into the run."""
        return {
            "kind": "text",
            "tokenizer": None if self.codec.byte_level else "tokenizer.json",
            "tokenizer_source": self.codec.tokenizer_path,
        }

    def __init__(self, cfg, seed: int) -> None:
        super().__init__()
        self.cfg, self.seed = cfg, seed
        self.codec = Codec(cfg.tokenizer)
        self.spec = lm_spec(cfg)
        self.splits: dict[str, torch.Tensor] = {}
        self.stats: dict = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        text = read_text(source_files(self.cfg), self.cfg.max_bytes)
        tokens = self.codec.encode(text)
        bounds = split_bounds(len(tokens), self.cfg.val_fraction, self.cfg.test_fraction)
        arrays = {k: windows(tokens[a:b], self.cfg.seq_len) for k, (a, b) in bounds.items()}
        problems = list(window_problems(self.cfg, {k: len(w) for k, w in arrays.items()}))
        if problems:  # validation refuses these before the run for byte tokens (data/text_record.py)
            raise ConfigError(problems[0])
        vocab, dtype = self.spec.vocab_size, token_dtype(self.spec.vocab_size)
        self.splits = {k: torch.from_numpy(np.ascontiguousarray(w)).to(dtype) for k, w in arrays.items()}
        unigram = unigram_loss(arrays["train"][:, 1:], arrays["val"][:, 1:], vocab)
        self.stats = {
            "vocab_size": vocab,
            "bytes": len(text),
            "tokens": len(tokens),
            "bytes_per_token": len(text) / max(1, len(tokens)),
            "windows": {k: len(w) for k, w in arrays.items()},
            "unigram_val_loss": unigram,
            "unigram_val_bpb": unigram / math.log(2) * len(tokens) / max(1, len(text)),
        }

    def describe(self) -> str:
        s = self.stats
        return (
            f"data: {self.cfg.name}: {s['bytes']:,} bytes -> {s['tokens']:,} tokens (vocab {s['vocab_size']}); "
            f"windows of {self.cfg.seq_len}: {json.dumps(s['windows'])}; "
            f"unigram baseline val loss {s['unigram_val_loss']:.4f}"
        )

    def _topology(self) -> tuple[int, int, int]:
        return data_topology(self.trainer)

    def train_dataloader(self) -> TensorLoader:
        self.follow_training()
        rank, world, accum = self._topology()
        loader = TensorLoader(
            (self.splits["train"],),
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

    def _eval_loader(self, name: str) -> TensorLoader:
        rank, world, _ = self._topology()
        return TensorLoader(
            (self.splits[name],), self.cfg.eval_batch_size, shuffle=False, rank=rank, world_size=world
        )

    def val_dataloader(self) -> TensorLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> TensorLoader:
        return self._eval_loader("test")
