"""What a run measured, in one always-on callback: throughput, MFU, resident memory, precision.

One callback rather than one per measurement: Lightning calls every hook of every callback at
every batch, and on a small model each extra callback costs a measurable share of a step.

Throughput: samples (and, for language models, tokens) per second over all processes, and model
FLOPs utilisation (MFU), after a short warm-up.

The clock runs from the end of one training batch to the end of the next, so the time to fetch
a batch counts; validation, checkpointing and the first `warmup` batches (allocator and cache
warm-up) do not.

MFU = tokens/s x FLOPs per token / (peak FLOP/s per device x devices). FLOPs per token come from
the plan: 6 N + 12 L d T for the transformer (N matmul weights, L layers, d width, T sequence
length; see models/shapes.flops_per_token). Recomputation (activation checkpointing) is not
counted, as MFU defines it. The peak is `callbacks.throughput.peak_flops` when set, else the dense
(no sparsity) tensor-core peak of a known GPU for 16-bit precisions and its plain float32 peak
otherwise (TF32 matmuls can beat that, so float32 MFU may exceed what bf16 MFU would show). On
CPU and unknown GPUs without `peak_flops`, MFU is null.

Memory (callbacks/memory.py): RSS sampled every `log_every_n_steps` optimizer steps, kept as the
value once warm (the first sample at or after 10% of the run's steps: allocator pools, caches and
lazily built kernels are in place by then), the largest sample after that and the last; the peak
is the OS's own high-water mark of the process (ru_maxrss), which sees the peak inside a step.

Timing: seconds since the process was launched (the OS's start time of the process, so the
interpreter's start and every import count) at the end of the first and of the last optimizer
step: start-up, and with the wall time at the end of the run, the tail after training.

Precision: `trainer.precision=bf16-mixed` keeps float32 weights and runs matmuls in bfloat16
under autocast; `bf16-true` casts the weights themselves. The first training forward's output
dtype shows which one happened.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytorch_lightning as pl
import torch

from bigtrain.callbacks.memory import peak_rss_mb, rss_mb
from bigtrain.data.tensors import TrainBatches

# The share of the run's steps treated as warm-up for memory.
WARMUP_FRACTION = 0.1

# Dense peak FLOP/s per device from the vendors' data sheets: (16-bit tensor core, float32).
# More specific names first ("H100 PCIe" before "H100").
GPU_PEAK_FLOPS: list[tuple[str, float, float]] = [
    ("H200", 989.4e12, 66.9e12),
    ("H100 PCIe", 756.0e12, 51.2e12),
    ("H100", 989.4e12, 66.9e12),  # SXM
    ("A100", 312.0e12, 19.5e12),
    ("A10G", 125.0e12, 31.2e12),  # the A10 data sheet's figures
    ("L4", 121.0e12, 30.3e12),
    ("V100", 125.0e12, 15.7e12),  # float16 (V100 has no bfloat16)
    ("RTX 4090", 165.2e12, 82.6e12),  # float32 accumulate
]


def gpu_peak_flops(device_name: str, precision: str) -> float | None:
    """The table's peak for a CUDA device name (as torch.cuda.get_device_name gives it)."""
    sixteen = "16" in precision
    for key, half, single in GPU_PEAK_FLOPS:
        if key.lower() in device_name.lower():
            return half if sixteen else single
    return None


def process_age_s() -> float | None:
    """Seconds since this process was launched (Linux's /proc/self/stat start time), or None
    where the OS does not say."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after "pid (name)": field 3 onwards
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time since boot
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class Meter(TrainBatches):
    """The run's measurements; also the data's count of processed training batches (one
    callback less than a separate TrainBatches: Lightning calls every hook of every callback)."""

    def __init__(
        self,
        warmup: int = 5,
        tokens_per_sample: int | None = None,
        flops_per_token: int | None = None,
        peak_flops: float | None = None,
        precision: str = "32-true",
        memory_every: int = 10,
    ) -> None:
        super().__init__()
        self.warmup = warmup
        self.tokens_per_sample, self.flops_per_token = tokens_per_sample, flops_per_token
        self.peak_flops, self.precision = peak_flops, precision
        self.world_size = 1
        self.seconds = 0.0
        self.samples = 0
        self.seen = 0
        self.last_time: float | None = None
        self.memory_every = memory_every
        self.memory_period = -1
        self.warm_step: int | None = None
        self.rss_warm = self.rss_after_warm = self.rss_last = None
        self.param_dtype: str | None = None
        self.forward_dtype: str | None = None
        self.probe: Any = None
        # Process age at the first optimizer step's end; perf_counter at the last one's end.
        self.first_step_age: float | None = None
        self.last_step_time: float | None = None
        # Seconds in validation and test batches since the last optimizer step (the tail's
        # forward passes), and when the running one started.
        self.eval_batches_s = 0.0
        self.eval_started: float | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.world_size = trainer.world_size
        if self.peak_flops is None and pl_module.device.type == "cuda":
            self.peak_flops = gpu_peak_flops(torch.cuda.get_device_name(pl_module.device), self.precision)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        def record(module: torch.nn.Module, args: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor) and self.forward_dtype is None:
                self.forward_dtype = str(output.dtype).removeprefix("torch.")
                self.probe.remove()

        self.param_dtype = str(next(pl_module.parameters()).dtype).removeprefix("torch.")
        self.probe = pl_module.register_forward_hook(record)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.probe is not None:
            self.probe.remove()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self.last_time = time.perf_counter()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.last_time = None  # validation time is not training time

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.last_time = time.perf_counter()

    def on_validation_batch_start(
        self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self.eval_started = time.perf_counter()

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self.eval_batches_s += time.perf_counter() - (self.eval_started or time.perf_counter())

    on_test_batch_start = on_validation_batch_start
    on_test_batch_end = on_validation_batch_end

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self.eval_batches_s = 0.0
        # A batch is timed when `warmup` batches came before it.
        now = time.perf_counter()
        if self.last_time is not None and self.seen >= self.warmup:
            self.seconds += now - self.last_time
            self.samples += len(batch[0]) * self.world_size
        self.seen += 1
        self.last_time = self.last_step_time = now
        step = trainer.global_step
        if self.first_step_age is None and step >= 1:
            self.first_step_age = process_age_s()
        if step // self.memory_every != self.memory_period:
            self.memory_period = step // self.memory_every
            self.sample_memory(step, trainer.estimated_stepping_batches)

    def sample_memory(self, step: int, total_steps: float) -> None:
        now = rss_mb()
        self.rss_last = now
        if self.rss_warm is None:
            if step >= WARMUP_FRACTION * total_steps:
                self.warm_step, self.rss_warm, self.rss_after_warm = step, now, now
        else:
            self.rss_after_warm = max(self.rss_after_warm, now)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.seconds <= 0:
            return
        s = self.summary()
        pl_module.log("perf/samples_per_s", s["samples_per_s"], rank_zero_only=True)
        if s["tokens_per_s"] is not None:
            pl_module.log("perf/tokens_per_s", s["tokens_per_s"], rank_zero_only=True)
        if s["mfu"] is not None:
            pl_module.log("perf/mfu", s["mfu"], rank_zero_only=True)

    def summary(self) -> dict:
        """results.json's `throughput` block."""
        rate = self.samples / self.seconds if self.seconds > 0 else None
        tokens = rate * self.tokens_per_sample if rate is not None and self.tokens_per_sample else None
        mfu = None
        if tokens is not None and self.flops_per_token and self.peak_flops:
            mfu = tokens * self.flops_per_token / (self.peak_flops * self.world_size)
        return {"samples_per_s": rate, "tokens_per_s": tokens, "mfu": mfu}

    def memory_summary(self) -> dict:
        """results.json's `memory` block (MiB; this process, i.e. rank zero's)."""

        def mb(v):
            return None if v is None else round(v, 1)

        out = {
            "rss_mb_warm": mb(self.rss_warm),
            "warm_step": self.warm_step,
            "rss_mb_after_warm_max": mb(self.rss_after_warm),
            "rss_mb_last": mb(self.rss_last),
            "rss_mb_peak": mb(peak_rss_mb()),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            # This process's device: the peak of memory torch allocated, in GiB.
            out["cuda_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        return out

    def timing_summary(self) -> dict:
        """results.json's `timing` block: seconds since launch at the first and the last
        optimizer step's end, and now (the results being collected); and the seconds that
        validation and test batches took after the last step (the tail's forward passes)."""
        age = process_age_s()
        last = None
        if age is not None and self.last_step_time is not None:
            last = age - (time.perf_counter() - self.last_step_time)

        def s(v):
            return None if v is None else round(v, 3)

        return {
            "first_step_s": s(self.first_step_age),
            "last_step_s": s(last),
            "results_s": s(age),
            "eval_batches_after_last_step_s": s(self.eval_batches_s),
        }

    def precision_summary(self) -> dict:
        """results.json's `precision` block."""
        return {
            "setting": self.precision,
            "param_dtype": self.param_dtype,
            "forward_dtype": self.forward_dtype,
        }
