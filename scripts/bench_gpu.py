"""GPU benchmark: tokens/s and MFU of gpt/125m and gpt/1.3b in bf16, with and without
torch.compile, on one GPU and with FSDP over every visible GPU, and a hand-written bf16 loop on one
GPU for the ratio.

    python scripts/bench_gpu.py                         # every case; table + JSON on stdout
    python scripts/bench_gpu.py --models gpt/125m --steps 40 --json gpu.json
    python scripts/bench_gpu.py --check                 # no GPU needed: compose and plan each case

Each bigtrain case is one `bigtrain` process (FSDP launches one process per GPU), on the standard
library's source as bytes (a corpus every machine has; the model's embedding is sized for bytes),
1024-token windows, AdamW (fused), gradient clipping 1.0, no validation. Tokens/s and MFU come
from results.json (the Throughput callback: the first `--warmup` steps are not timed; MFU uses the
plan's 6N + 12LdT FLOPs per token and the device's dense bf16 peak). The hand-written loop runs the
same model, data, optimizer and clipping under torch.autocast(bfloat16), timed the same way.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MICRO_BATCH = {"gpt/125m": 16, "gpt/1.3b": 8}


def overrides(model: str, strategy: str, compile_: bool, devices: int, steps: int, warmup: int) -> list[str]:
    micro = MICRO_BATCH[model]
    return [
        "+experiment=gpt_125m",
        f"model={model}",
        "model.vocab_size=null",
        "data.max_bytes=16000000",
        "data.seq_len=1024",
        f"data.batch_size={micro * devices}",
        "trainer.accumulate_grad_batches=1",
        f"trainer.devices={devices}",
        f"trainer.max_steps={steps}",
        "trainer.limit_val_batches=0",
        "test_after_fit=false",
        f"strategy={strategy}",
        f"strategy.compile={str(compile_).lower()}",
        "optim.implementation=fused",
        f"callbacks.throughput.warmup={warmup}",
        "callbacks.samples.enabled=false",
        "callbacks.plots=false",
        "callbacks.print_config=false",
        "callbacks.model_summary_depth=0",
        "callbacks.progress_bar=none",
    ]


def cases(models: list[str], gpus: int) -> list[tuple[str, str, bool, int]]:
    out = []
    for model in models:
        for compile_ in (False, True):
            out.append((model, "auto", compile_, 1))
            out.append((model, "fsdp", compile_, gpus))
    return out


def run_bigtrain(args: list[str], workdir: Path, timeout: int) -> dict:
    run_dir = workdir / f"run{time.monotonic_ns()}"
    proc = subprocess.run(
        [sys.executable, "-m", "bigtrain", *args, f"hydra.run.dir={run_dir}"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    results = json.loads((run_dir / "results.json").read_text())
    t = results["throughput"]
    return {
        "tokens_per_s": t["tokens_per_s"],
        "mfu": t["mfu"],
        "peak_gpu_mem_gib": (results.get("memory") or {}).get("cuda_peak_gib"),
        "wall_s": results["wall_seconds"],
    }


def handwritten(model_name: str, compile_: bool, steps: int, warmup: int) -> dict:
    """The single-GPU case as a plain loop: bf16 autocast, fused AdamW, clipping 1.0."""
    import torch

    import bigtrain
    from bigtrain.callbacks.meter import gpu_peak_flops
    from bigtrain.data.text import TextDataModule
    from bigtrain.models import build_model
    from bigtrain.runs.plan import make_plan
    from bigtrain.runs.validate import validate
    from bigtrain.training.optim import build_optimizer, build_scheduler

    cfg = validate(bigtrain.compose(overrides(model_name, "auto", compile_, 1, steps, warmup)))
    torch.manual_seed(cfg.seed)
    dm = TextDataModule(cfg.data, seed=cfg.seed)
    dm.setup()
    plan = make_plan(cfg, dm.spec)
    device = torch.device("cuda")
    model = build_model(cfg.model, dm.spec.input_shape, dm.spec.num_outputs).to(device)
    optimizer = build_optimizer(cfg.optim, model)
    scheduler = build_scheduler(cfg.sched, optimizer, steps)["scheduler"]
    forward = torch.compile(model) if compile_ else model
    windows, batch = dm.splits["train"], cfg.data.batch_size
    order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(cfg.seed))
    torch.cuda.reset_peak_memory_stats()
    seconds, last = 0.0, time.perf_counter()
    for step in range(steps):
        w = windows[order[step * batch : (step + 1) * batch]].to(device, non_blocking=True)
        x, y = w[:, :-1].long(), w[:, 1:].long()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = forward(x)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.trainer.gradient_clip_val)
        optimizer.step()
        scheduler.step()
        if step % cfg.trainer.log_every_n_steps == 0:
            float(loss)  # what logging reads back
        torch.cuda.synchronize()
        now = time.perf_counter()
        if step >= warmup:
            seconds += now - last
        last = now
    tokens = (steps - warmup) * batch * cfg.data.seq_len / seconds
    peak = gpu_peak_flops(torch.cuda.get_device_name(device), cfg.trainer.precision)
    return {
        "tokens_per_s": tokens,
        "mfu": tokens * plan["flops_per_token"] / peak if peak else None,
        "peak_gpu_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
    }


def check(models: list[str]) -> int:
    """Compose, validate and plan every case on this machine (CPU): the script's configs are valid."""
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for model, strategy, compile_, _ in cases(models, 2):
            args = overrides(model, strategy, compile_, 2 if strategy == "fsdp" else 1, 10, 2)
            args += ["trainer.accelerator=cpu", "dry_run=true", f"hydra.run.dir={tmp}/{time.monotonic_ns()}"]
            proc = subprocess.run([sys.executable, "-m", "bigtrain", *args], capture_output=True, text=True)
            status = "ok" if proc.returncode == 0 else proc.stderr.strip().splitlines()[-1]
            bad += proc.returncode != 0
            print(f"{model:9s} {strategy:5s} compile={compile_!s:5s} {status}")
    return 1 if bad else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(MICRO_BATCH), choices=list(MICRO_BATCH))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10, help="steps not timed (compile, allocator)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per case")
    parser.add_argument("--check", action="store_true", help="validate every case's config; no GPU needed")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.check:
        sys.exit(check(args.models))
    import torch

    if not torch.cuda.is_available():
        sys.exit("bench_gpu: no CUDA device visible; run it on a GPU machine (or --check here)")
    gpus = torch.cuda.device_count()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, strategy, compile_, devices in cases(args.models, gpus):
            ours = run_bigtrain(
                overrides(model, strategy, compile_, devices, args.steps, args.warmup),
                Path(tmp),
                args.timeout,
            )
            row = {"model": model, "strategy": strategy, "compile": compile_, "devices": devices, **ours}
            if strategy == "auto" and "error" not in ours:
                hand = handwritten(model, compile_, args.steps, args.warmup)
                row["handwritten_tokens_per_s"] = hand["tokens_per_s"]
                row["handwritten_mfu"] = hand["mfu"]
                row["ratio"] = hand["tokens_per_s"] / ours["tokens_per_s"]  # time per token, ours / theirs
            rows.append(row)
            print(json.dumps(row), flush=True)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bigtrain on {torch.cuda.get_device_name(0)} x {gpus} (bf16-mixed)")
    for col in ("model", "strategy", "compile", "GPUs", "tokens/s", "MFU", "hand-written tokens/s", "ratio"):
        table.add_column(col, justify="left" if col in ("model", "strategy") else "right")
    for r in rows:
        if "error" in r:
            table.add_row(
                r["model"],
                r["strategy"],
                str(r["compile"]),
                str(r["devices"]),
                "failed: " + " ".join(r["error"]),
            )
            continue
        table.add_row(
            r["model"],
            r["strategy"],
            str(r["compile"]),
            str(r["devices"]),
            f"{r['tokens_per_s']:,.0f}",
            "" if r["mfu"] is None else f"{r['mfu']:.1%}",
            f"{r['handwritten_tokens_per_s']:,.0f}" if "handwritten_tokens_per_s" in r else "",
            f"{r['ratio']:.3f}" if "ratio" in r else "",
        )
    Console().print(table)
    print(json.dumps(rows, indent=2))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
