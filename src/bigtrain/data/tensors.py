"""Batches sliced from in-memory tensors.

A torch DataLoader collates sample by sample; for data sets that fit in memory, one index
permutation per epoch and one gather per batch is many times cheaper and keeps the data pipeline
out of the step time.

Sharding keeps the training math independent of the number of processes: every optimizer step
consumes one *global* batch of `global_batch` indices from the epoch's permutation, cut into
`world_size x accumulation` equal micro-batches; rank r takes micro-batches r, r + world_size, ...
So 1 process with accumulation 2 and 2 processes without accumulation see the same samples per
optimizer step, and the mean of the micro-batch losses equals the loss of the global batch.
The samples after the epoch's last full global batch make one smaller step, cut the same way into
equal micro-batches (its size rounded down to a multiple of world_size x accumulation), unless
`drop_last` (data/batches.py). Every rank hands out the same number of micro-batches, a
multiple of the accumulation, so Lightning's accumulation boundaries fall on the steps.

The loader is resumable: `state_dict` is where training goes on (epoch, micro-batches of it
already consumed) and `load_state_dict` makes the next pass start there, with that epoch's
permutation, so a run resumed from a mid-epoch checkpoint sees exactly the samples an
uninterrupted run sees. The position comes from the `position` callable when given (the
trainer's count of processed batches): the loader's own count runs ahead, because Lightning's
fetcher pulls one batch early, and it cannot see where `limit_train_batches` ends an epoch.

The resume point is taken when a pass hands out its first batch, not when `iter()` is called:
Lightning builds the training iterator while the optimizer is configured (to count the steps),
before it restores the loop counters, so `epoch()` is still 0 at that moment.

"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytorch_lightning as pl
import torch

from bigtrain.data.batches import epoch_batches


def data_topology(trainer: Any) -> tuple[int, int, int]:
    """(data-parallel rank, data-parallel size, accumulation) for a data module's loaders. Under
    tensor parallel the ranks of one group must see the same batch, so this is the strategy's
    data-parallel rank and size (devices x nodes / tensor_parallel_size), not the global rank and
    world size; (0, 1, 1) outside a Trainer."""
    if trainer is None:
        return 0, 1, 1
    dist = trainer.distributed_sampler_kwargs or {"rank": 0, "num_replicas": 1}
    return dist["rank"], dist["num_replicas"], trainer.accumulate_grad_batches


class TensorLoader:
    """Training (`drop_last` True or False): global batches of `batch_size`, cut into micro-batches
    over ranks and accumulation; the epoch's last, smaller global batch is dropped or trained (see
    data/batches.py). Evaluation (`drop_last` None): per-rank batches of `batch_size`, every
    sample on exactly one rank."""

    def __init__(
        self,
        tensors: Sequence[torch.Tensor],
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        epoch: Callable[[], int] = lambda: 0,
        position: Callable[[], tuple[int, int]] | None = None,
        rank: int = 0,
        world_size: int = 1,
        accumulation: int = 1,
        drop_last: bool | None = None,
    ) -> None:
        self.tensors = tuple(tensors)
        self.n = len(self.tensors[0])
        self.batch_size = batch_size
        self.shuffle, self.seed, self.epoch, self.position = shuffle, seed, epoch, position
        self.rank, self.world_size, self.accumulation = rank, world_size, accumulation
        self.drop_last = drop_last
        self.training = drop_last is not None
        parallel = world_size * accumulation
        if self.training and batch_size % parallel:
            raise ValueError(f"global batch {batch_size} is not divisible by {world_size} x {accumulation}")
        self.steps = epoch_batches(self.n, batch_size, parallel, bool(drop_last))
        # Micro-batches handed out in the current pass; a pending resume point (epoch, consumed).
        self._handed_out = 0
        self._resume_at: tuple[int, int] | None = None

    @property
    def micro_batches_per_epoch(self) -> int:
        """Micro-batches of one epoch on each rank: `accumulation` per optimizer step."""
        return self.steps.steps * self.accumulation

    def state_dict(self) -> dict[str, Any]:
        """Where training goes on: epoch and micro-batches of it consumed (plain ints)."""
        epoch, consumed = self.position() if self.position is not None else (self.epoch(), self._handed_out)
        return {"epoch": int(epoch), "consumed": int(consumed)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next pass be epoch `state['epoch']`, skipping the micro-batches already consumed."""
        epoch, consumed = int(state["epoch"]), int(state["consumed"])
        self._resume_at = (epoch + 1, 0) if consumed >= len(self) else (epoch, consumed)

    @property
    def micro_batch_size(self) -> int:
        """Samples per micro-batch of a full global batch (training), or per batch (evaluation)."""
        return self.batch_size // (self.world_size * self.accumulation) if self.training else self.batch_size

    def __len__(self) -> int:
        if self.training:
            return self.micro_batches_per_epoch
        per_rank = len(range(self.rank, self.n, self.world_size))
        return -(-per_rank // self.batch_size)

    def _order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=gen)

    def _take(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # index_select, not t[idx]: advanced indexing costs five times more on a CPU (85 against
        # 15 us for an epoch of the digits).
        return tuple(t.index_select(0, idx) for t in self.tensors)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        # A generator: nothing below runs until the first batch is asked for.
        epoch, skip = int(self.epoch()), 0
        if self._resume_at is not None:
            (epoch, skip), self._resume_at = self._resume_at, None
        self._handed_out = skip
        order = self._order(epoch)
        if self.training:
            parallel = self.world_size * self.accumulation
            for i in range(skip, self.micro_batches_per_epoch):
                step, a = divmod(i, self.accumulation)
                # Equal micro-batches within a step: the last, smaller step has smaller ones.
                micro = self.steps.step_batch(step) // parallel
                start = step * self.batch_size + (a * self.world_size + self.rank) * micro
                self._handed_out = i + 1
                yield self._take(order[start : start + micro])
        else:
            # Evaluation: every sample exactly once over all ranks (no padding, so metrics synced by
            # torchmetrics count each sample once).
            mine = order[self.rank :: self.world_size]
            for start in range(0, len(mine), self.batch_size):
                idx = mine[start : start + self.batch_size]
                yield self._take(idx)


class TrainBatches(pl.Callback):
    """Training batches of the current epoch that Lightning has processed, from the `batch_idx`
    its hooks receive (after a resume it goes on from the restored count): a batch counts from
    its `on_train_batch_end`, so a checkpoint saved inside its training step (the non-finite
    policy's) leaves it out, one saved at its end or at a validation after it counts it. Reset
    when an epoch starts; after the last epoch it keeps that epoch's count. The data module puts
    it first among the Trainer's callbacks unless one there counts already (bigtrain's Meter is one:
    a callback less is a hook call less per batch), so the checkpoints of a batch end see that
    batch."""

    def __init__(self) -> None:
        self.processed = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.processed = 0

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int
    ) -> None:
        self.processed = batch_idx

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        self.processed = batch_idx + 1


class TrainPosition:
    """Exact mid-epoch resume for a LightningDataModule: its state in every checkpoint is where
    training goes on (epoch, micro-batches of it processed), and the training loader made after
    a restore starts there (`loader.load_state_dict`). Mixed in before pl.LightningDataModule."""

    # Where a resumed fit continues in the training data (set from the checkpoint), and the
    # count of the epoch's processed training batches (made with the first training loader);
    # class-level so that subclasses with their own __init__ have them too.
    _resume_at: dict | None = None
    train_batches: TrainBatches | None = None
    trainer: Any

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _position(self) -> tuple[int, int]:
        """Where training goes on: (epoch, micro-batches of it processed); a finished epoch
        (all of it, or `limit_train_batches` of it) points at the start of the next one."""
        trainer = self.trainer
        if trainer is None:
            return 0, 0
        done = self.train_batches.processed if self.train_batches is not None else 0
        if done >= trainer.num_training_batches:
            return trainer.current_epoch + 1, 0
        return trainer.current_epoch, done

    def state_dict(self) -> dict:
        """Saved in every checkpoint: the training data position (plain ints)."""
        if self.trainer is None or self.trainer.state.fn != "fit":
            return {}
        epoch, consumed = self._position()
        return {"train_position": {"epoch": epoch, "consumed": consumed}}

    def load_state_dict(self, state: dict) -> None:
        # Lightning restores the datamodule before it builds the loaders; the train loader made
        # next starts at this position (the loader's own state is restored too late, see tensors).
        self._resume_at = state.get("train_position")

    def follow_training(self) -> None:
        """Count the epoch's processed batches with the Trainer's first TrainBatches, or put one
        first among its callbacks: Lightning calls a data module no hook per training batch, and
        the batch-end checkpoints must run after the count of their batch."""
        callbacks = self.trainer.callbacks if self.trainer is not None else None
        if callbacks is None:
            self.train_batches = self.train_batches or TrainBatches()
            return
        counting = next((c for c in callbacks if isinstance(c, TrainBatches)), None)
        if counting is None:
            counting = self.train_batches or TrainBatches()
            callbacks.insert(0, counting)
        self.train_batches = counting

    def resume_loader(self, loader: Any) -> Any:
        """`loader` (a training loader with load_state_dict), starting where a restored run goes on."""
        if self._resume_at is not None:
            loader.load_state_dict(self._resume_at)
            self._resume_at = (
                None  # once: a loader made again later (reload_dataloaders_every_n_epochs) starts afresh
            )
        return loader
