"""Pre-tokenised corpora that need not fit in memory: `<name>.bin` is a flat array of token ids
(uint16 when the vocabulary fits in 65536, else uint32) read through np.memmap, and `<name>.json`
holds {dtype, vocab_size, n_tokens, n_bytes, tokenizer}.

Write one from text (bytes by default, or a tokenizers JSON file):
    python -m bigtrain.data.tokens write corpus path/to/texts/ more.txt --tokenizer tok.json
    bigtrain-tokens write corpus --stdlib --max-bytes 50000000

Training draws `batch_size` random windows per optimizer step from the train range. The
offsets of step s in epoch e come from a generator seeded by (seed, e, s), the same on every
rank; rank r takes micro-batches r, r + world, ... of that global batch (as TensorLoader does), so
runs are reproducible per seed and the global batch does not depend on the number of ranks.
Validation and test read non-overlapping windows of their ranges in order.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from bigtrain.data.codec import Codec, lm_spec, read_meta, token_path_base
from bigtrain.data.tensors import data_topology
from bigtrain.data.text import expand_paths, split_bounds, stdlib_files, unigram_loss


def open_tokens(path: str) -> np.ndarray:
    meta = read_meta(path)
    return np.memmap(
        token_path_base(path) + ".bin", dtype=np.dtype(meta["dtype"]), mode="r", shape=(meta["n_tokens"],)
    )


def write_tokens(
    out: str, files: list[Path], tokenizer: str | None = None, max_bytes: int | None = None
) -> dict:
    """Encode `files` (each followed by a blank line) into `<out>.bin` + `<out>.json`, one file at a
    time so the corpus never has to fit in memory. Returns the metadata."""
    codec = Codec(tokenizer)
    dtype = np.uint16 if codec.vocab_size <= 65536 else np.uint32
    base = token_path_base(out)
    Path(base).parent.mkdir(parents=True, exist_ok=True)
    n_tokens = n_bytes = 0
    with open(base + ".bin", "wb") as f:
        for path in files:
            data = path.read_bytes() + b"\n\n"
            if max_bytes is not None:
                data = data[: max_bytes - n_bytes]
            if not data:
                break
            ids = codec.encode(data).astype(dtype)
            f.write(ids.tobytes())
            n_tokens, n_bytes = n_tokens + len(ids), n_bytes + len(data)
    meta = {
        "dtype": np.dtype(dtype).name,
        "vocab_size": codec.vocab_size,
        "n_tokens": n_tokens,
        "n_bytes": n_bytes,
        "tokenizer": tokenizer,
    }
    Path(base + ".json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


STEPS_PER_DRAW = 64


class RandomWindowLoader:
    """`steps` global batches of random (seq_len + 1)-token windows from tokens[lo:hi]."""

    def __init__(self, tokens: np.ndarray, lo: int, hi: int, seq_len: int, global_batch: int, steps: int,
                 *, seed: int, epoch: Callable[[], int], rank: int = 0, world_size: int = 1, accumulation: int = 1) -> None:  # fmt: skip
        self.tokens, self.lo, self.hi, self.seq_len = tokens, lo, hi, seq_len
        self.global_batch, self.steps, self.seed, self.epoch = global_batch, steps, seed, epoch
        self.rank, self.world_size, self.accumulation = rank, world_size, accumulation
        self.micro = global_batch // (world_size * accumulation)

    def __len__(self) -> int:
        return self.steps * self.accumulation

    def __iter__(self) -> Iterator[tuple[torch.Tensor]]:
        span = self.hi - self.lo - self.seq_len  # valid start offsets: [lo, lo + span)
        epoch = self.epoch()
        offsets = np.arange(self.seq_len + 1)
        tokens = np.asarray(self.tokens)  # a plain view of the memmap: cheaper to index
        block = np.empty((0, self.global_batch), dtype=np.int64)
        for step in range(self.steps):
            # Window starts are drawn for STEPS_PER_DRAW steps at a time, from a generator seeded by
            # (seed, epoch, block): seeding one costs ~45 us, as much as gathering a batch.
            b, i = divmod(step, STEPS_PER_DRAW)
            if i == 0:
                n = min(STEPS_PER_DRAW, self.steps - b * STEPS_PER_DRAW)
                gen = np.random.default_rng([self.seed, epoch, b])
                block = self.lo + gen.integers(0, span, size=(n, self.global_batch))
            starts = block[i]
            for a in range(self.accumulation):
                first = (a * self.world_size + self.rank) * self.micro
                mine = starts[first : first + self.micro]
                # One gather for the whole micro-batch (a row per window), then one widening copy:
                # about twice the tokens/s of a slice per window at short windows.
                rows = tokens[mine[:, None] + offsets]
                yield (torch.from_numpy(rows.astype(np.int64)),)


class EvalWindowLoader:
    """Non-overlapping windows of tokens[lo:hi] in order, rank r taking windows r, r + world, ..."""

    def __init__(self, tokens: np.ndarray, lo: int, hi: int, seq_len: int, batch: int, cap: int | None,
                 rank: int = 0, world_size: int = 1) -> None:  # fmt: skip
        n = max(0, (hi - lo - 1) // seq_len)
        self.starts = [lo + i * seq_len for i in range(n if cap is None else min(n, cap))][rank::world_size]
        self.tokens, self.seq_len, self.batch = tokens, seq_len, batch

    def __len__(self) -> int:
        return -(-len(self.starts) // self.batch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor]]:
        for i in range(0, len(self.starts), self.batch):
            rows = [
                np.asarray(self.tokens[s : s + self.seq_len + 1], dtype=np.int64)
                for s in self.starts[i : i + self.batch]
            ]
            yield (torch.from_numpy(np.stack(rows)),)


def datamodule(cfg) -> TokensDataModule:
    """The data module of a validated RunConfig (data/tokens_record.py is its record)."""
    return TokensDataModule(cfg.data, seed=cfg.seed)


class TokensDataModule(pl.LightningDataModule):
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
        self.spec = lm_spec(cfg)
        self.meta = read_meta(cfg.path)
        self.codec = Codec(self.meta["tokenizer"])
        self.tokens: np.ndarray | None = None
        self.stats: dict = {}

    def setup(self, stage: str | None = None) -> None:
        if self.tokens is not None:
            return
        from bigtrain.config import ConfigError

        self.tokens = open_tokens(self.cfg.path)
        self.bounds = split_bounds(len(self.tokens), self.cfg.val_fraction, self.cfg.test_fraction)
        for name, (lo, hi) in self.bounds.items():
            if hi - lo <= self.cfg.seq_len + 1:
                raise ConfigError(
                    f"the {name} split of {self.cfg.path} has fewer than {self.cfg.seq_len + 2} tokens: "
                    "lower data.seq_len or raise data.val_fraction / data.test_fraction"
                )
        lo, hi = self.bounds["train"]
        steps = self.cfg.steps_per_epoch or max(1, (hi - lo) // (self.cfg.seq_len * self.cfg.batch_size))
        self.steps_per_epoch = steps
        # The unigram baseline from a bounded sample, so a large corpus is not read whole.
        sample = 1 << 22
        vlo, vhi = self.bounds["val"]
        unigram = unigram_loss(np.asarray(self.tokens[lo : min(hi, lo + sample)]),
                               np.asarray(self.tokens[vlo : min(vhi, vlo + sample)]), self.spec.vocab_size)  # fmt: skip
        self.stats = {
            "vocab_size": self.spec.vocab_size,
            "tokens": len(self.tokens),
            "bytes": self.meta["n_bytes"],
            "bytes_per_token": self.meta["n_bytes"] / max(1, self.meta["n_tokens"]),
            "unigram_val_loss": unigram,
        }

    def describe(self) -> str:
        return (
            f"data: tokens {self.cfg.path}: {len(self.tokens):,} tokens (vocab {self.spec.vocab_size}), "
            f"{self.steps_per_epoch} steps per epoch; unigram baseline val loss {self.stats['unigram_val_loss']:.4f}"
        )

    def _topology(self) -> tuple[int, int, int]:
        return data_topology(self.trainer)

    def train_dataloader(self) -> RandomWindowLoader:
        rank, world, accum = self._topology()
        epoch = (lambda: self.trainer.current_epoch) if self.trainer is not None else (lambda: 0)
        lo, hi = self.bounds["train"]
        return RandomWindowLoader(self.tokens, lo, hi, self.cfg.seq_len, self.cfg.batch_size, self.steps_per_epoch,
                                  seed=self.seed, epoch=epoch, rank=rank, world_size=world, accumulation=accum)  # fmt: skip

    def _eval(self, name: str) -> EvalWindowLoader:
        rank, world, _ = self._topology()
        lo, hi = self.bounds[name]
        return EvalWindowLoader(self.tokens, lo, hi, self.cfg.seq_len, self.cfg.eval_batch_size,
                                self.cfg.max_eval_windows, rank, world)  # fmt: skip

    def val_dataloader(self) -> EvalWindowLoader:
        return self._eval("val")

    def test_dataloader(self) -> EvalWindowLoader:
        return self._eval("test")


def main(argv: list[str] | None = None) -> None:
    """`bigtrain-tokens write OUT INPUT...`: tokenise text files into OUT.bin + OUT.json."""
    parser = argparse.ArgumentParser(prog="bigtrain-tokens", description="Write pre-tokenised corpora.")
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="tokenise text files, folders or globs into OUT.bin and OUT.json")
    w.add_argument("out", help="output name: writes OUT.bin and OUT.json")
    w.add_argument("inputs", nargs="*", help="text files, folders or globs")
    w.add_argument("--stdlib", action="store_true", help="also the .py files of Python's standard library")
    w.add_argument("--tokenizer", default=None, help="a tokenizers JSON file (default: bytes)")
    w.add_argument("--max-bytes", type=int, default=None, help="stop after this many bytes of text")
    args = parser.parse_args(argv)
    files = expand_paths(args.inputs) + (stdlib_files() if args.stdlib else [])
    if not files:
        parser.exit(2, "bigtrain-tokens: no input file: give files, folders or globs, or --stdlib\n")
    if args.tokenizer is not None:
        import importlib.util

        if importlib.util.find_spec("tokenizers") is None:
            parser.exit(
                2, "bigtrain-tokens: --tokenizer needs the tokenizers package: pip install 'bigtrain[text]'\n"
            )
    meta = write_tokens(args.out, files, args.tokenizer, args.max_bytes)
    print(
        f"wrote {token_path_base(args.out)}.bin: {meta['n_tokens']:,} tokens ({meta['dtype']}) from {meta['n_bytes']:,} bytes"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
