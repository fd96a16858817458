"""Benchmarks: bigtrain against a hand-written PyTorch loop doing the same work, in one run.

Each case runs bigtrain and its hand-written twin alternately, `--reps` times each, and reports
medians and the ratio bigtrain / hand-written (lower is better; 1.00 means no overhead).

    python scripts/bench.py                 # all cases, table + JSON on stdout
    python scripts/bench.py --cases mlp cli --reps 5 --json bench.json

Cases:
  mlp   the digits MLP (default run settings: AdamW, cosine schedule, loss logged every
        log_every_n_steps, the five classification metrics updated every step and computed per
        epoch). Measured: steady-state seconds per optimizer step, over training batches only.
  cli   wall time of `bigtrain --help`, of an invalid override, and of `dry_run=true`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUIET = ["callbacks.print_config=false", "callbacks.model_summary_depth=0", "callbacks.plots=false"]


# --------------------------------------------------------------------------- the MLP case


def mlp_bigtrain(epochs: int, workdir: Path) -> float:
    """Seconds per optimizer step of a bigtrain run (validation excluded), from its Throughput callback."""
    import bigtrain

    overrides = [
        *QUIET,
        f"trainer.max_epochs={epochs}",
        "test_after_fit=false",
        "trainer.enable_progress_bar=false",
    ]
    results = bigtrain.train(overrides, run_dir=workdir / f"bt{time.monotonic_ns()}")
    batch = bigtrain.compose(overrides).data.batch_size
    return batch / results["throughput"]["samples_per_s"]


def mlp_handwritten(epochs: int, warmup: int = 5) -> float:
    """The same training as the default run, written as a plain loop; seconds per step."""
    import torch

    import bigtrain
    from bigtrain.config import validate
    from bigtrain.data.sklearn import SklearnDataModule
    from bigtrain.metrics import build_metrics
    from bigtrain.models import build_model
    from bigtrain.optim import build_optimizer, build_scheduler

    cfg = validate(bigtrain.compose([]))
    torch.manual_seed(cfg.seed)
    dm = SklearnDataModule(cfg.data, seed=cfg.seed)
    dm.setup()
    x, y = dm.splits["train"]
    model = build_model(cfg.model, dm.spec.input_shape, dm.spec.num_outputs)
    steps_per_epoch = len(y) // cfg.data.batch_size
    optimizer = build_optimizer(cfg.optim, model)
    scheduler = build_scheduler(cfg.sched, optimizer, steps_per_epoch * epochs)["scheduler"]
    metrics = build_metrics("multiclass", 10, cfg.metrics.names)
    mean_loss = __import__("torchmetrics").MeanMetric()
    seconds, counted, seen = 0.0, 0, 0
    for epoch in range(epochs):
        model.train()
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        order = torch.randperm(len(y), generator=gen)
        last = time.perf_counter()
        for step in range(steps_per_epoch):
            idx = order[step * cfg.data.batch_size : (step + 1) * cfg.data.batch_size]
            xb, yb = x[idx], y[idx]
            logits = model(xb)
            loss = torch.nn.functional.cross_entropy(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            mean_loss.update(loss.detach(), weight=yb.numel())
            metrics.update(torch.softmax(logits.detach(), -1), yb)
            if (seen + 1) % cfg.trainer.log_every_n_steps == 0:
                float(loss)  # what logging costs: one device-to-host read
            now = time.perf_counter()
            seen += 1
            if seen > warmup:
                seconds += now - last
                counted += 1
            last = now
        metrics.compute()
        mean_loss.compute()
        metrics.reset()
        mean_loss.reset()
    return seconds / counted


# --------------------------------------------------------------------------- the CLI case


def cli_seconds(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bigtrain", *args], cwd=cwd, capture_output=True)
    return time.perf_counter() - start


CLI_CASES = {
    "--help": ["--help"],
    "invalid override": ["optim.lr=-1"],
    "dry_run": ["dry_run=true", *QUIET],
}


# --------------------------------------------------------------------------- driver


def run_cases(cases: list[str], reps: int, epochs: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "mlp" in cases:
            ours, theirs = [], []
            for _ in range(reps):
                theirs.append(mlp_handwritten(epochs))
                ours.append(mlp_bigtrain(epochs, work))
            rows.append(_row("digits MLP: s/step", ours, theirs))
        if "cli" in cases:
            for name, args in CLI_CASES.items():
                times = [cli_seconds(args, work) for _ in range(reps)]
                rows.append(_row(f"CLI {name}: s", times, None))
    return rows


def _row(name: str, ours: list[float], theirs: list[float] | None) -> dict:
    row = {"case": name, "bigtrain": statistics.median(ours), "runs": len(ours)}
    if theirs:
        row["handwritten"] = statistics.median(theirs)
        row["ratio"] = row["bigtrain"] / row["handwritten"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", nargs="+", default=["mlp", "cli"], choices=["mlp", "cli"])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    import logging

    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    rows = run_cases(args.cases, args.reps, args.epochs)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bigtrain vs hand-written PyTorch (median of {args.reps})")
    for col in ("case", "bigtrain", "hand-written", "ratio"):
        table.add_column(col, justify="left" if col == "case" else "right")
    for r in rows:
        hw = r.get("handwritten")
        table.add_row(
            r["case"],
            f"{r['bigtrain']:.5f}",
            "" if hw is None else f"{hw:.5f}",
            "" if hw is None else f"{r['ratio']:.3f}",
        )
    Console().print(table)
    print(json.dumps(rows, indent=2))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
