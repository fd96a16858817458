"""Batches sliced from in-memory tensors.

A torch DataLoader collates sample by sample; for data sets that fit in memory, one index
permutation per epoch and one gather per batch is many times cheaper and keeps the data pipeline
out of the step time.

Sharding keeps the training math independent of the number of processes: every optimizer step
consumes one *global* batch of `global_batch` indices from the epoch's permutation, cut into
`world_size x accumulation` equal micro-batches; rank r takes micro-batches r, r + world_size, ...
So 1 process with accumulation 2 and 2 processes without accumulation see the same samples per
optimizer step, and the mean of the micro-batch losses equals the loss of the global batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch


class TensorLoader:
    def __init__(
        self,
        tensors: Sequence[torch.Tensor],
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        epoch: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
        accumulation: int = 1,
        drop_last: bool = False,
    ) -> None:
        """`batch_size` is the global batch when `drop_last` (training), else the per-rank batch."""
        self.tensors = tuple(tensors)
        self.n = len(self.tensors[0])
        self.batch_size = batch_size
        self.shuffle, self.seed, self.epoch = shuffle, seed, epoch
        self.rank, self.world_size, self.accumulation = rank, world_size, accumulation
        self.drop_last = drop_last
        if drop_last and batch_size % (world_size * accumulation):
            raise ValueError(f"global batch {batch_size} is not divisible by {world_size} x {accumulation}")

    @property
    def micro_batch_size(self) -> int:
        return self.batch_size // (self.world_size * self.accumulation) if self.drop_last else self.batch_size

    def __len__(self) -> int:
        if self.drop_last:
            return (self.n // self.batch_size) * self.accumulation
        per_rank = len(range(self.rank, self.n, self.world_size))
        return -(-per_rank // self.batch_size)

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch())
        return torch.randperm(self.n, generator=gen)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        order = self._order()
        if self.drop_last:
            micro = self.micro_batch_size
            steps = self.n // self.batch_size
            for step in range(steps):
                base = step * self.batch_size
                for a in range(self.accumulation):
                    start = base + (a * self.world_size + self.rank) * micro
                    idx = order[start : start + micro]
                    yield tuple(t[idx] for t in self.tensors)
        else:
            # Evaluation: every sample exactly once over all ranks (no padding, so metrics synced by
            # torchmetrics count each sample once).
            mine = order[self.rank :: self.world_size]
            for start in range(0, len(mine), self.batch_size):
                idx = mine[start : start + self.batch_size]
                yield tuple(t[idx] for t in self.tensors)
