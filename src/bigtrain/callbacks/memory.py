"""Resident memory of the training process, to show that a long run stays flat.

Samples RSS every `log_every_n_steps` optimizer steps (a read of /proc/self/statm: 3 us) and
keeps three numbers: RSS once warm (the first sample at or after 10% of the run's steps:
allocator pools, caches and lazily built kernels are in place by then), the peak, and the last.
results.json gets them as `memory`.
"""

from __future__ import annotations

import os
import resource
import sys

import pytorch_lightning as pl

# The share of the run's steps treated as warm-up.
WARMUP_FRACTION = 0.1


# (pid, descriptor) of this process's /proc/self/statm, kept open: opening and parsing
# /proc/self/status took 45-190 us a sample, a pread of statm takes 3. A forked child must not
# read its parent's, hence the pid.
_statm: tuple[int, int] | None = None
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_mb() -> float:
    """Current resident set size in MiB (peak RSS where /proc is missing, e.g. macOS)."""
    global _statm
    try:
        if _statm is None or _statm[0] != os.getpid():
            _statm = (os.getpid(), os.open("/proc/self/statm", os.O_RDONLY))
        # statm: total program size, then resident pages.
        return int(os.pread(_statm[1], 256, 0).split()[1]) * _PAGE / 2**20
    except (OSError, AttributeError):  # no /proc, or no os.pread (Windows)
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, kB on Linux


class MemoryWatch(pl.Callback):
    def __init__(self, every: int = 10) -> None:
        self.every = every
        self.warm_step: int | None = None
        self.warm = self.peak = self.last = None
        self._sampled_period = -1

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if step // self.every == self._sampled_period:
            return
        self._sampled_period = step // self.every
        now = rss_mb()
        self.last = now
        self.peak = now if self.peak is None else max(self.peak, now)
        if self.warm is not None:
            return
        total = trainer.estimated_stepping_batches
        if step >= WARMUP_FRACTION * total:
            self.warm_step, self.warm = step, now

    def summary(self) -> dict:
        def mb(v):
            return None if v is None else round(v, 1)

        out = {
            "rss_mb_warm": mb(self.warm),
            "warm_step": self.warm_step,
            "rss_mb_peak": mb(self.peak),
            "rss_mb_last": mb(self.last),
        }
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            # This process's device: the peak of memory torch allocated, in GiB.
            out["cuda_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        return out
