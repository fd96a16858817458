"""Token windows from corpora of shards: random training windows (one corpus or a weighted mixture) and in-order eval windows.

Training: each optimizer step draws one global batch of `global_batch` windows. Which source a
window comes from is fixed by the window's index i in the epoch (i = step x global_batch + j):
source k where u_i = frac(theta + (i + 1) x 0.618...) falls in the k-th slice of [0, 1) by weight
(a golden-ratio sequence: after n windows every source has n x weight of them within a few
windows, for every n, so a mixture's proportions hold per batch and over any span of steps).
The window's start is uniform over the source's valid starts (data/shards.Runs), drawn for
STEPS_PER_DRAW steps at a time from a generator seeded by (seed, epoch, block); theta comes from
(seed, epoch). Everything is a function of (seed, epoch, step): the same on every rank, for any
number of ranks, and after a resume at any step. Rank r takes micro-batches r, r + world, ... of
the global batch (as TensorLoader does). One corpus draws exactly as the single-file loader did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from bigtrain.data.shards import Corpus, Runs

STEPS_PER_DRAW = 64
GOLDEN = (5**0.5 - 1) / 2


def mixture_sources(weights: Sequence[float], seed: int, epoch: int, first: int, n: int) -> np.ndarray:
    """The source of windows first .. first + n - 1 of an epoch (see the module's docstring)."""
    if len(weights) == 1:
        return np.zeros(n, dtype=np.int64)
    theta = np.random.default_rng([seed, epoch, 1 << 30]).random()
    i = np.arange(first + 1, first + n + 1, dtype=np.float64)
    u = np.mod(theta + i * GOLDEN, 1.0)
    edges = np.cumsum(np.asarray(weights, dtype=np.float64) / sum(weights))[:-1]
    return np.searchsorted(edges, u, side="right")


class RandomWindowLoader:
    """`steps` global batches of random (seq_len + 1)-token windows from the train runs of one
    or more corpora; `skip()` (micro-batches) makes the next pass start mid-epoch."""

    def __init__(self, sources: Sequence[tuple[Corpus, Runs]], weights: Sequence[float], seq_len: int,
                 global_batch: int, steps: int, *, seed: int, epoch: Callable[[], int], rank: int = 0,
                 world_size: int = 1, accumulation: int = 1) -> None:  # fmt: skip
        self.sources, self.weights, self.seq_len = list(sources), list(weights), seq_len
        self.global_batch, self.steps, self.seed, self.epoch = global_batch, steps, seed, epoch
        self.rank, self.world_size, self.accumulation = rank, world_size, accumulation
        self.micro = global_batch // (world_size * accumulation)
        self._resume_at: tuple[int, int] | None = None

    def __len__(self) -> int:
        return self.steps * self.accumulation

    def load_state_dict(self, state: dict) -> None:
        """Start the next pass at epoch `state['epoch']`, after `state['consumed']` micro-batches."""
        epoch, consumed = int(state["epoch"]), int(state["consumed"])
        self._resume_at = (epoch + 1, 0) if consumed >= len(self) else (epoch, consumed)

    def draw(self, epoch: int, block: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(source, shard, start) of the windows of `n` steps from step block x STEPS_PER_DRAW on."""
        gen = np.random.default_rng([self.seed, epoch, block])
        shape = (n, self.global_batch)
        if len(self.sources) == 1:
            runs = self.sources[0][1]
            shard, start = runs.locate(gen.integers(0, runs.total, size=shape))
            return np.zeros(shape, dtype=np.int64), shard, start
        first = block * STEPS_PER_DRAW * self.global_batch
        src = mixture_sources(self.weights, self.seed, epoch, first, n * self.global_batch).reshape(shape)
        totals = np.array([runs.total for _, runs in self.sources])
        u = gen.integers(0, totals[src])
        shard, start = np.empty(shape, np.int64), np.empty(shape, np.int64)
        for k, (_, runs) in enumerate(self.sources):
            mine = src == k
            shard[mine], start[mine] = runs.locate(u[mine])
        return src, shard, start

    def __iter__(self) -> Iterator[tuple[torch.Tensor]]:
        epoch, skip = int(self.epoch()), 0
        if self._resume_at is not None:
            (epoch, skip), self._resume_at = self._resume_at, None
        block_drawn = -1
        for i in range(skip, len(self)):
            step, a = divmod(i, self.accumulation)
            b, row = divmod(step, STEPS_PER_DRAW)
            if b != block_drawn:
                n = min(STEPS_PER_DRAW, self.steps - b * STEPS_PER_DRAW)
                src, shard, start = self.draw(epoch, b, n)
                block_drawn = b
            first = (a * self.world_size + self.rank) * self.micro
            cols = slice(first, first + self.micro)
            yield (torch.from_numpy(self.gather(src[row, cols], shard[row, cols], start[row, cols])),)

    def gather(self, src: np.ndarray, shard: np.ndarray, start: np.ndarray) -> np.ndarray:
        if len(self.sources) == 1:
            return self.sources[0][0].gather(shard, start, self.seq_len + 1)
        out = np.empty((len(start), self.seq_len + 1), dtype=np.int64)
        for k in np.unique(src):
            rows = src == k
            out[rows] = self.sources[k][0].gather(shard[rows], start[rows], self.seq_len + 1)
        return out


def eval_windows(runs: Runs, seq_len: int, cap: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(shard, start) of non-overlapping windows of each run in order, at most `cap`."""
    shards, starts = [], []
    total = 0
    for s, first, count in zip(runs.shard, runs.first, runs.count, strict=True):
        n = (int(count) - 1) // seq_len + 1
        if cap is not None:
            n = min(n, cap - total)
        shards.append(np.full(n, s))
        starts.append(first + seq_len * np.arange(n))
        total += n
        if cap is not None and total >= cap:
            break
    if not shards:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(shards).astype(np.int64), np.concatenate(starts).astype(np.int64)


class EvalWindowLoader:
    """Non-overlapping windows in order (each source's share of them), rank r taking windows
    r, r + world, ..."""

    def __init__(self, parts: Sequence[tuple[Corpus, np.ndarray, np.ndarray]], seq_len: int, batch: int,
                 rank: int = 0, world_size: int = 1) -> None:  # fmt: skip
        self.rows = [(k, s, t) for k, (_, shards, starts) in enumerate(parts) for s, t in zip(shards, starts, strict=True)]  # fmt: skip
        self.rows = self.rows[rank::world_size]
        self.corpora, self.seq_len, self.batch = [c for c, _, _ in parts], seq_len, batch

    def __len__(self) -> int:
        return -(-len(self.rows) // self.batch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor]]:
        for i in range(0, len(self.rows), self.batch):
            rows = self.rows[i : i + self.batch]
            out = np.stack([np.asarray(self.corpora[k].shards[s][t : t + self.seq_len + 1], dtype=np.int64) for k, s, t in rows])  # fmt: skip
            yield (torch.from_numpy(out),)
