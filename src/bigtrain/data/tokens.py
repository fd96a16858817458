"""Pre-tokenised corpora as a data module: one corpus or a weighted mixture, read through memmaps, resumable mid-epoch.

`data.path` names a corpus folder written by `bigtrain-tokens write` (data/shard_writer.py), or
an older single-file corpus (`<name>.bin` + `<name>.json`); `data.sources` a list of
{path, weight} to mix instead. Each corpus splits contiguously into [train | val | test] by
data.val_fraction / data.test_fraction (data/shards.py). `data.documents`: `cross` lets a window
run across documents (as one token stream), `within` keeps every window inside one document.

Training draws `batch_size` random windows per optimizer step (data/windows.py): a function of
(seed, epoch, step), so every rank and any number of ranks sees the same global batch, and a run
resumed from a mid-epoch checkpoint goes on with exactly the windows an uninterrupted run sees
(the position is in the checkpoint, data/tensors.TrainPosition). Validation and test read
non-overlapping windows in order, each source's share of data.max_eval_windows.
"""

from __future__ import annotations

import math

import numpy as np
import pytorch_lightning as pl

from bigtrain.config import ConfigError
from bigtrain.data.codec import Codec
from bigtrain.data.shards import Corpus, corpus_meta, corpus_sources, open_corpora
from bigtrain.data.tensors import TrainPosition, data_topology
from bigtrain.data.text import unigram_loss
from bigtrain.data.tokens_record import steps_per_epoch, token_spec
from bigtrain.data.windows import EvalWindowLoader, RandomWindowLoader, eval_windows

SPLITS = ("train", "val", "test")


def shares(cap: int | None, weights: list[float]) -> list[int | None]:
    """`cap` windows split by weight, summing to `cap` (largest remainders); None: no cap."""
    if cap is None:
        return [None] * len(weights)
    exact = [cap * w / sum(weights) for w in weights]
    out = [math.floor(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: out[i] - exact[i])[: cap - sum(out)]:
        out[i] += 1
    return out


def datamodule(cfg) -> TokensDataModule:
    """The data module of a validated RunConfig (data/tokens_record.py is its record)."""
    return TokensDataModule(cfg.data, seed=cfg.seed)


class TokensDataModule(TrainPosition, pl.LightningDataModule):
    class_names: list[str] | None = None  # next-token prediction: the classes are the vocabulary

    def __init__(self, cfg, seed: int) -> None:
        super().__init__()
        self.cfg, self.seed = cfg, seed
        self.spec = token_spec(cfg)
        self.paths, self.weights = corpus_sources(cfg)
        self.corpora: list[Corpus] = []
        self.codec = Codec(corpus_meta(self.paths[0])["tokenizer"])
        self.stats: dict = {}
        self._resume_at = None

    def preprocessing(self) -> dict:
        """What generation needs (data/preprocess.py): the tokenizer, copied into the run."""
        return {
            "kind": "text",
            "tokenizer": None if self.codec.byte_level else "tokenizer.json",
            "tokenizer_source": self.codec.tokenizer_path,
        }

    def setup(self, stage: str | None = None) -> None:
        if self.corpora:
            return
        within = self.cfg.documents == "within"
        self.corpora = open_corpora(self.paths)
        self.runs = {name: [] for name in SPLITS}
        for path, corpus in zip(self.paths, self.corpora, strict=True):
            bounds = corpus.bounds(self.cfg.val_fraction, self.cfg.test_fraction)
            for name, (lo, hi) in bounds.items():
                runs = corpus.runs(lo, hi, self.cfg.seq_len, within)
                if runs.total == 0:
                    fits = "no document" if within else "no stretch"
                    fractions = "lower" if name == "train" else "raise"
                    raise ConfigError(
                        f"the {name} split of {path} has {fits} of {self.cfg.seq_len + 1} tokens: "
                        f"lower data.seq_len or {fractions} data.val_fraction / data.test_fraction"
                        + (", or use data.documents=cross" if within else "")
                    )
                self.runs[name].append(runs)
        # The plan's count (data/tokens_record.py), from the sizes already read.
        self.steps_per_epoch = steps_per_epoch(self.cfg, [c.n_tokens for c in self.corpora])
        self.stats = self._stats()

    def _stats(self) -> dict:
        """Sizes, and the unigram baseline from a bounded sample of the first corpus (a large
        corpus is not read whole)."""
        first = self.corpora[0]
        sample = 1 << 22
        (lo, hi), (vlo, vhi) = (
            first.bounds(self.cfg.val_fraction, self.cfg.test_fraction)[k] for k in ("train", "val")
        )
        (ti, ta, tb), (vi, va, vb) = first.segments(lo, hi)[0], first.segments(vlo, vhi)[0]
        train = np.asarray(first.shards[ti][ta : min(tb, ta + sample)])
        val = np.asarray(first.shards[vi][va : min(vb, va + sample)])
        n_tokens = sum(c.n_tokens for c in self.corpora)
        n_bytes = sum(c.meta["n_bytes"] for c in self.corpora)
        return {
            "vocab_size": self.spec.vocab_size,
            "tokens": n_tokens,
            "bytes": n_bytes,
            "bytes_per_token": n_bytes / max(1, n_tokens),
            "unigram_val_loss": unigram_loss(train, val, self.spec.vocab_size),
            "sources": [
                {"path": p, "weight": w, "tokens": c.n_tokens, "train_windows": r.total}
                for p, w, c, r in zip(self.paths, self.weights, self.corpora, self.runs["train"], strict=True)
            ],
        }

    def describe(self) -> str:
        what = self.paths[0] if len(self.paths) == 1 else f"a mixture of {len(self.paths)} corpora"
        return (
            f"data: tokens {what}: {self.stats['tokens']:,} tokens (vocab {self.spec.vocab_size}), "
            f"{self.steps_per_epoch} steps per epoch; unigram baseline val loss {self.stats['unigram_val_loss']:.4f}"
        )

    def train_dataloader(self) -> RandomWindowLoader:
        self.follow_training()
        rank, world, accum = data_topology(self.trainer)
        sources = list(zip(self.corpora, self.runs["train"], strict=True))
        loader = RandomWindowLoader(sources, self.weights, self.cfg.seq_len, self.cfg.batch_size, self.steps_per_epoch,
                                    seed=self.seed, epoch=self._epoch, rank=rank, world_size=world, accumulation=accum)  # fmt: skip
        return self.resume_loader(loader)

    def _eval(self, name: str) -> EvalWindowLoader:
        rank, world, _ = data_topology(self.trainer)
        caps = shares(self.cfg.max_eval_windows, self.weights)
        parts = [
            (corpus, *eval_windows(runs, self.cfg.seq_len, cap))
            for corpus, runs, cap in zip(self.corpora, self.runs[name], caps, strict=True)
        ]
        return EvalWindowLoader(parts, self.cfg.seq_len, self.cfg.eval_batch_size, rank, world)

    def val_dataloader(self) -> EvalWindowLoader:
        return self._eval("val")

    def test_dataloader(self) -> EvalWindowLoader:
        return self._eval("test")
