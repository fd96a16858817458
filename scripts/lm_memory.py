"""Compare the plan's memory estimate for a transformer with the peak measured on CPU.

    python scripts/lm_memory.py                      # the built-in cases
    python scripts/lm_memory.py model=llama/tiny data.seq_len=64 data.batch_size=4

Each case runs in a fresh process: it warms torch up on a throw-away model (thread pools, kernel
caches and autograd's first allocations are not the model's), reads the peak resident set size
(ru_maxrss), then builds the model and AdamW and runs three float32 optimizer steps. The growth
of the peak RSS is the measured memory of weights + gradients + optimizer state + activations,
which is what the plan's `memory_per_device_bytes.total` estimates.

torch's CPU allocator has no cache (unlike CUDA's), but glibc's malloc raises its mmap threshold
each time a large block is freed, so later tensors of that size come from the heap, which
fragments and keeps RSS above the live tensors (measured: 1.30x the plan instead of 0.91x for
a 24M-parameter model). The child processes fix the threshold at 64 KiB
(MALLOC_MMAP_THRESHOLD_), so every tensor above it is its own mapping, returned when freed, and
the peak RSS is the peak of live tensors.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys

CASES = [
    ["model=gpt/tiny", "data.seq_len=128", "data.batch_size=8"],
    ["model=llama/tiny", "data.seq_len=128", "data.batch_size=8"],
    [
        "model=llama/tiny",
        "model.n_layers=8",
        "model.d_model=512",
        "model.n_heads=8",
        "model.d_ff=1536",
        "data.seq_len=256",
        "data.batch_size=8",
    ],  # fmt: skip
    ["model=gpt/125m", "model.vocab_size=null", "data.seq_len=256", "data.batch_size=4"],
]
BASE = ["data=stdlib_text", "metrics=lm", "data.max_bytes=100000", "optim=adamw", "trainer.precision=32-true"]


def measure(overrides: list[str]) -> dict:
    """In this process: plan and measured peak for one case."""
    import torch
    import torch.nn.functional as F

    import bigtrain
    from bigtrain.checks import validate
    from bigtrain.data import data_spec
    from bigtrain.models import build_model
    from bigtrain.runs.plan import make_plan
    from bigtrain.training.optim import build_optimizer

    torch.set_num_threads(1)
    cfg = validate(bigtrain.compose([*BASE, *overrides]))
    spec = data_spec(cfg)
    plan = make_plan(cfg, spec)
    micro, seq = cfg.micro_batch_size, spec.seq_len
    x = torch.randint(0, spec.vocab_size, (micro, seq + 1))

    def steps(model, n, batch):
        opt = build_optimizer(cfg.optim, model)
        for _ in range(n):
            loss = F.cross_entropy(model(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    warm = build_model(dataclasses_replace(cfg.model, n_layers=1), spec.input_shape, spec.num_outputs)
    # One short sequence: warms kernels up without growing the heap to the real step's size.
    steps(warm, 2, x[:1, :9])
    del warm
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    model = build_model(cfg.model, spec.input_shape, spec.num_outputs)
    steps(model, 3, x)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    mem = plan["memory_per_device_bytes"]
    return {
        "case": " ".join(overrides),
        "params": plan["params"]["total"],
        "plan_total": mem["total"],
        "plan_activations": mem["activations"],
        "measured_peak": peak,
        "ratio_measured_over_plan": round(peak / mem["total"], 3),
    }


def dataclasses_replace(obj, **changes):
    import dataclasses

    return dataclasses.replace(obj, **changes)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--one"]:
        print(json.dumps(measure(argv[1:])))
        return
    for case in [argv] if argv else CASES:
        out = subprocess.run(
            [sys.executable, __file__, "--one", *case], capture_output=True, text=True, check=True
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{row['case']}: params {row['params']:,}  plan {row['plan_total'] / 2**20:.1f} MiB  "
            f"measured {row['measured_peak'] / 2**20:.1f} MiB  ratio {row['ratio_measured_over_plan']}",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
