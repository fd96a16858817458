"""Training throughput: samples (and, for language models, tokens) per second over all processes,
and model FLOPs utilisation (MFU), after a short warm-up.

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
"""

from __future__ import annotations

import time

import pytorch_lightning as pl

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


class Throughput(pl.Callback):
    def __init__(
        self,
        warmup: int = 5,
        tokens_per_sample: int | None = None,
        flops_per_token: int | None = None,
        peak_flops: float | None = None,
        precision: str = "32-true",
    ) -> None:
        self.warmup = warmup
        self.tokens_per_sample, self.flops_per_token = tokens_per_sample, flops_per_token
        self.peak_flops, self.precision = peak_flops, precision
        self.world_size = 1
        self.seconds = 0.0
        self.samples = 0
        self._seen = 0
        self._last: float | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.world_size = trainer.world_size
        if self.peak_flops is None and pl_module.device.type == "cuda":
            import torch

            self.peak_flops = gpu_peak_flops(torch.cuda.get_device_name(pl_module.device), self.precision)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last = time.perf_counter()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last = None  # validation time is not training time

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        # A batch is timed when `warmup` batches came before it.
        now = time.perf_counter()
        if self._last is not None and self._seen >= self.warmup:
            self.seconds += now - self._last
            self.samples += len(batch[0]) * trainer.world_size
        self._seen += 1
        self._last = now

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
        rate = self.samples / self.seconds if self.seconds > 0 else None
        tokens = rate * self.tokens_per_sample if rate is not None and self.tokens_per_sample else None
        mfu = None
        if tokens is not None and self.flops_per_token and self.peak_flops:
            mfu = tokens * self.flops_per_token / (self.peak_flops * self.world_size)
        return {"samples_per_s": rate, "tokens_per_s": tokens, "mfu": mfu}
