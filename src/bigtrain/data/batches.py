"""How one epoch of training samples becomes optimizer steps, without torch.

Every step takes one global batch (`data.batch_size`) from the epoch's permutation. What is left
after the last full global batch is either dropped (`data.drop_last=true`) or trained as one
more, smaller step (the default), cut into `data-parallel size x accumulation` equal
micro-batches like every other step; only the few samples that cannot be split evenly (fewer than
that product) are dropped, so one process without accumulation drops nothing.

A training split smaller than one global batch is refused: the configured batch would never be
trained (with `drop_last` no step would run at all). Validation refuses it where the split size is
known before any data is loaded (scikit-learn sets, tables, image folders); `check_loaded` refuses
it after the data module's setup for the others. So is a `trainer.limit_train_batches`
fraction that keeps no batch of the epoch, where the split size is known.

The loaders (data/tensors.py), the config check (data/checks.py) and the plan use these numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bigtrain.config import ConfigError


@dataclass(frozen=True)
class EpochBatches:
    """The optimizer steps of one epoch over `samples` training samples."""

    samples: int
    global_batch: int
    full_steps: int
    last_batch: int  # samples of the smaller last step; 0 when there is none

    @property
    def steps(self) -> int:
        return self.full_steps + (1 if self.last_batch else 0)

    @property
    def dropped(self) -> int:
        return self.samples - self.full_steps * self.global_batch - self.last_batch

    def step_batch(self, step: int) -> int:
        """Samples of optimizer step `step` (0-based) of the epoch."""
        return self.global_batch if step < self.full_steps else self.last_batch


def epoch_batches(samples: int, global_batch: int, parallel: int, drop_last: bool) -> EpochBatches:
    """Steps of an epoch: full global batches, then the rest rounded down to a multiple of
    `parallel` (data-parallel size x accumulation) unless `drop_last`."""
    full, rest = divmod(samples, global_batch)
    last = 0 if drop_last else rest - rest % parallel
    return EpochBatches(samples, global_batch, full, last)


def split_train_size(samples: int, val: float, test: float) -> int:
    """Training samples of the stratified split by fractions (data/sklearn.split): scikit-learn
    takes ceil(fraction x n) for the held-out part, first test of all, then val of the rest."""
    rest = samples - math.ceil(test * samples)
    return rest - math.ceil(val / (1.0 - test) * rest)


def train_split_size(cfg: Any) -> int | None:
    """Training samples of the configured data, known without loading it (the source's record
    says how: a scikit-learn set's fractions, a table's rows, an image folder's listing); None
    where only the data module can count them (text, whose windows need the tokens)."""
    from bigtrain.data import source

    count = source(cfg.data.name).train_samples
    return count(cfg) if count is not None else None


def parallel_size(cfg: Any) -> int:
    """Micro-batches per optimizer step over all data-parallel processes."""
    return cfg.data_parallel_size * cfg.trainer.accumulate_grad_batches


def too_few_samples(cfg: Any, samples: int) -> str | None:
    """The error line when `samples` training samples hold less than one global batch."""
    batch = cfg.data.batch_size
    if samples >= batch:
        return None
    k = parallel_size(cfg)
    what = f"data={cfg.data.name}: the training split has {samples} samples, fewer than one global batch"
    if samples < k:
        return (
            f"{what} (data.batch_size={batch}) or one per process and accumulation step ({k}): "
            "add training data or lower trainer.devices / trainer.accumulate_grad_batches"
        )
    return f"{what} (data.batch_size={batch}), so no full step would train: set data.batch_size={samples - samples % k} or smaller"


def limit_keeps_nothing(cfg: Any, samples: int) -> str | None:
    """The error line when `trainer.limit_train_batches`, a fraction, keeps no batch of an epoch
    over `samples` training samples: Lightning takes int(batches x fraction) batches and stops
    at 0, once the data is loaded. The smallest fraction named is rounded up, so that it keeps one."""
    t, d = cfg.trainer, cfg.data
    limit = t.limit_train_batches
    if not isinstance(limit, float) or samples < d.batch_size:
        return None
    e = epoch_batches(samples, d.batch_size, parallel_size(cfg), getattr(d, "drop_last", False))
    batches = e.steps * t.accumulate_grad_batches  # a process's micro-batches per epoch
    if int(batches * limit) >= 1:
        return None
    least = math.ceil(1000 / batches) / 1000
    return (
        f"trainer.limit_train_batches={limit} keeps none of the epoch's {batches} training batches, "
        f"so no step would train: set trainer.limit_train_batches={least} or more, or an int number of batches"
    )


def loaded_train_size(dm: Any) -> int | None:
    """Training samples of a data module after setup; None when it holds no split in memory."""
    train = getattr(dm, "splits", {}).get("train")
    if train is None:
        return None
    return len(train[0] if isinstance(train, tuple) else train)


def check_loaded(cfg: Any, dm: Any) -> None:
    """After the data module's setup, before the Trainer: refuse a training split smaller than
    one global batch (ConfigError, one line), for data whose size validation could not know."""
    samples = loaded_train_size(dm)
    line = too_few_samples(cfg, samples) if samples is not None else None
    if line is not None:
        raise ConfigError(line)


def epoch_plan(cfg: Any) -> dict[str, Any]:
    """The plan's per-epoch numbers: training samples, optimizer steps (after
    `trainer.limit_train_batches`), samples dropped, and the last step's batch; None where the
    data must be read first (text)."""
    from bigtrain.data import source

    d, t = cfg.data, cfg.trainer
    drop_last = getattr(d, "drop_last", False)
    out: dict[str, Any] = {"drop_last": drop_last, "train_samples": None, "steps_per_epoch": None}
    out.update({"dropped_per_epoch": None, "last_step_batch": None})
    fixed = source(d.name).steps_per_epoch
    if fixed is not None:  # a token corpus draws its windows: its steps are its own
        out.update(steps_per_epoch=fixed(d), dropped_per_epoch=0, last_step_batch=d.batch_size)
    elif (samples := train_split_size(cfg)) is not None and samples >= d.batch_size:
        e = epoch_batches(samples, d.batch_size, parallel_size(cfg), drop_last)
        out.update(train_samples=samples, steps_per_epoch=e.steps, dropped_per_epoch=e.dropped)
        out["last_step_batch"] = e.step_batch(e.steps - 1)
    if out["steps_per_epoch"] is not None and t.limit_train_batches is not None:
        out["steps_per_epoch"] = limited_steps(
            out["steps_per_epoch"], t.accumulate_grad_batches, t.limit_train_batches
        )
    return out


def limited_steps(steps: int, accumulation: int, limit: int | float) -> int:
    """Optimizer steps of an epoch under Lightning's `limit_train_batches` (an int counts
    micro-batches, a float is a fraction of them); a last incomplete accumulation steps too."""
    batches = steps * accumulation
    kept = min(batches, limit) if isinstance(limit, int) else int(batches * limit)
    return math.ceil(kept / accumulation)
