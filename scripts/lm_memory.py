"""Compare the plan's memory estimate for a transformer with the peak measured on CPU.

    python scripts/lm_memory.py                      # the built-in cases, 3 runs each
    python scripts/lm_memory.py --reps 5             # more runs per case
    python scripts/lm_memory.py --malloc-default     # glibc's default malloc (see below)
    python scripts/lm_memory.py model=llama/tiny data.seq_len=64 data.batch_size=4

`memory_rows(reps)` returns the same table as dicts (scripts/bench.py `--cases memory`).

The method. Each run is a fresh process with one torch thread. It warms torch up on a throw-away
one-layer model of width 64 (thread pools, kernel caches and autograd's first allocations are
not the model's), frees it, and reads the process's *current* resident set size (statm). Then
it builds the model and the optimizer the run would build (bigtrain's build_optimizer: AdamW,
fused on CPU) and runs three float32 training steps in Lightning's order: forward and loss,
zero_grad (set_to_none), backward, optimizer step. Lightning zeroes the gradients after the
forward, so from the second step on the previous step's gradients are alive during the forward
and the loss. The peak is the OS high-water mark (getrusage ru_maxrss), and

    measured = peak RSS - RSS before the model

is what the plan's `memory_per_device_bytes.total` estimates: weights + gradients + optimizer
state + activations + the transients of the loss and the backward.

glibc's malloc in the child processes has its mmap threshold fixed at 64 KiB
(MALLOC_MMAP_THRESHOLD_=65536), so every tensor above it is its own mapping, returned to the OS
when freed, and the peak RSS is the peak of live tensors (plus kernels' workspaces). Left alone,
glibc raises the threshold each time a large block is freed (up to 32 MiB), tensors below it then
come from the heap, and the heap keeps the pages of freed tensors that later ones do not fit:
measured, a real CPU run holds 410 to 510 MiB more than its live tensors in these cases (ratio
1.16 to 1.40), an amount set by allocation order rather than by the model. The plan estimates
the tensors, which is what a GPU's caching allocator holds (docs/lm.md); `--malloc-default`
measures with glibc's default instead, and a CPU run that sets the same variable gets the plan's
figure.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys

CASES = [
    ("gpt/125m, byte vocabulary (256), 4 x 256",
     ["model=gpt/125m", "model.vocab_size=null", "data.seq_len=256", "data.batch_size=4"]),
    ("gpt/125m, GPT-2 vocabulary (50257), 4 x 256",
     ["model=gpt/125m", "model.vocab_size=50257", "data.seq_len=256", "data.batch_size=4"]),
    ("LLaMA shape 25M: 8 layers, d 512, 8 heads, 2 KV heads, FFN 1536, 8 x 256",
     ["model=llama/tiny", "model.n_layers=8", "model.d_model=512", "model.n_heads=8", "model.n_kv_heads=2",
      "model.d_ff=1536", "data.seq_len=256", "data.batch_size=8"]),
]  # fmt: skip
BASE = ["data=stdlib_text", "metrics=lm", "data.max_bytes=100000", "optim=adamw", "trainer.precision=32-true"]
MiB = 2**20
MMAP_THRESHOLD = 65536  # bytes; None: glibc's default


def measure(overrides: list[str]) -> dict:
    """In this process: the plan and the measured peak of one case (bytes)."""
    import dataclasses
    import gc

    import torch
    import torch.nn.functional as F

    import bigtrain
    from bigtrain.callbacks.memory import rss_mb
    from bigtrain.data import data_spec
    from bigtrain.models import build_model
    from bigtrain.runs.plan import make_plan
    from bigtrain.runs.validate import validate
    from bigtrain.training.optim import build_optimizer

    torch.set_num_threads(1)
    cfg = validate(bigtrain.compose([*BASE, *overrides]))
    spec = data_spec(cfg)
    plan = make_plan(cfg, spec)
    x = torch.randint(0, spec.vocab_size, (cfg.micro_batch_size, spec.seq_len + 1))

    def steps(model: torch.nn.Module, n: int, batch: torch.Tensor) -> None:
        opt = build_optimizer(cfg.optim, model)
        for _ in range(n):  # Lightning's order: forward and loss, zero_grad, backward, step
            loss = F.cross_entropy(model(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    small = dataclasses.replace(cfg.model, n_layers=1, d_model=64, n_heads=4, n_kv_heads=None, d_ff=None,
                                vocab_size=None)  # fmt: skip
    steps(build_model(small, spec.input_shape, spec.num_outputs), 2, x[:1, :9])
    gc.collect()
    before = rss_mb() * MiB
    model = build_model(cfg.model, spec.input_shape, spec.num_outputs)
    steps(model, 3, x)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    mem = plan["memory_per_device_bytes"]
    return {"params": plan["params"]["total"], "plan": mem, "measured": peak - before}


def run_case(overrides: list[str], mmap_threshold: int | None = MMAP_THRESHOLD) -> dict:
    """measure() in a fresh process."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if mmap_threshold is not None:
        env["MALLOC_MMAP_THRESHOLD_"] = str(mmap_threshold)
    out = subprocess.run(
        [sys.executable, __file__, "--one", *overrides], capture_output=True, text=True, check=True, env=env
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def case_row(
    title: str, overrides: list[str], reps: int, mmap_threshold: int | None = MMAP_THRESHOLD
) -> dict:
    """One case run `reps` times: the plan and the median, min and max measured, in MiB."""
    runs = [run_case(overrides, mmap_threshold) for _ in range(reps)]
    measured = [r["measured"] / MiB for r in runs]
    plan_mib = runs[0]["plan"]["total"] / MiB
    median = statistics.median(measured)
    return {
        "case": title,
        "unit": "MiB",
        "params": runs[0]["params"],
        "plan_mib": round(plan_mib, 1),
        "measured_mib": round(median, 1),
        "measured_min_mib": round(min(measured), 1),
        "measured_max_mib": round(max(measured), 1),
        "ratio": round(median / plan_mib, 3),
        "target": 0.10,
    }


def memory_rows(reps: int) -> list[dict]:
    """The built-in cases, each run `reps` times in fresh processes, one after the other."""
    return [case_row(title, overrides, reps) for title, overrides in CASES]


def main(argv: list[str]) -> None:
    if argv[:1] == ["--one"]:
        print(json.dumps(measure(argv[1:])))
        return
    reps, threshold = 3, MMAP_THRESHOLD
    while argv[:1] and argv[0] in ("--reps", "--malloc-default"):
        if argv[0] == "--reps":
            reps, argv = int(argv[1]), argv[2:]
        else:
            threshold, argv = None, argv[1:]
    cases = [(" ".join(argv), argv)] if argv else CASES
    for title, overrides in cases:
        r = case_row(title, overrides, reps, threshold)
        print(
            f"{r['case']}: params {r['params']:,}  plan {r['plan_mib']:.1f} MiB  measured {r['measured_mib']:.1f}"
            f" MiB ({r['measured_min_mib']:.1f} to {r['measured_max_mib']:.1f}, {reps} runs)  ratio {r['ratio']}",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
