"""Benchmarks: bigtrain against a hand-written PyTorch loop doing the same work, in one run.

Each training case runs bigtrain and its hand-written twin back to back, `--reps` times, in
alternating order (on a shared or throttled machine the speed drifts between runs; a pair is run
close together), and reports the median seconds per optimizer step of each and the median of the
per-pair ratios bigtrain / hand-written (lower is better; 1.00 means no overhead).

    python scripts/bench.py                                  # every case
    python scripts/bench.py --cases mlp transformer --reps 7 --json bench.json

Cases:
  mlp          the default run (digits MLP, AdamW, cosine schedule, the five classification
               metrics updated every step and computed each epoch; every log_every_n_steps the
               loss, gradient norm and learning rate are read and written to a CSV file).
               Also a bare Lightning module doing the same work with no bigtrain around it:
               what Lightning itself costs.
  transformer  gpt/tiny on the standard library's source (bytes, 128-token windows, 16 per
               step, AdamW and cosine), with the same logging as above.
  loader       tokens/s that the token-file loader (data=tokens) hands out on one worker, and
               a plain numpy gather of random windows from the same file.
  cli          wall time of `bigtrain --help`, of an invalid override, and of `dry_run=true`
               for the default run and for +experiment=llama_7b.

Seconds per step cover training batches only (validation excluded), after `warmup` steps, as
bigtrain's Throughput callback counts them.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUIET = [
    "callbacks.print_config=false",
    "callbacks.model_summary_depth=0",
    "callbacks.plots=false",
    "trainer.enable_progress_bar=false",
    "test_after_fit=false",
]
TRANSFORMER = [
    "model=gpt/tiny",
    "data=stdlib_text",
    "data.max_bytes=400000",
    "data.seq_len=128",
    "data.batch_size=16",
    "metrics=lm",
    "trainer.max_epochs=1",
    "trainer.limit_val_batches=2",
    "callbacks.samples.enabled=false",
]


# --------------------------------------------------------------------------- bigtrain side


def bigtrain_step_seconds(overrides: list[str], workdir: Path) -> float:
    """Seconds per optimizer step of a bigtrain run, from its Throughput callback."""
    import bigtrain

    overrides = [*QUIET, *overrides]
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):  # the run's own tables
        results = bigtrain.train(overrides, run_dir=workdir / f"bt{time.monotonic_ns()}")
    batch = bigtrain.compose(overrides).data.batch_size
    return batch / results["throughput"]["samples_per_s"]


# --------------------------------------------------------------------------- hand-written side


class StepClock:
    """Per-step intervals after `warmup` steps, restarted at each epoch start (as Throughput)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.seen, self.seconds, self.counted = warmup, 0, 0.0, 0
        self.last = time.perf_counter()

    def epoch_start(self) -> None:
        self.last = time.perf_counter()

    def step_end(self) -> None:
        now = time.perf_counter()
        self.seen += 1
        if self.seen > self.warmup:
            self.seconds += now - self.last
            self.counted += 1
        self.last = now

    @property
    def per_step(self) -> float:
        return self.seconds / self.counted


def _log_row(writer, step: int, loss, model, optimizer) -> None:
    """What bigtrain logs every log_every_n_steps: the loss, the gradient norm before clipping
    and the learning rate, read to the host and written to a CSV file."""
    import torch

    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    writer.writerow([step, float(loss), float(norm), optimizer.param_groups[0]["lr"]])


def _setup(overrides: list[str]):
    import torch

    import bigtrain
    from bigtrain.config import validate

    cfg = validate(bigtrain.compose(overrides))
    torch.manual_seed(cfg.seed)
    return cfg


def mlp_handwritten(epochs: int, workdir: Path) -> float:
    """The default run as a plain loop; seconds per step."""
    import torch
    import torchmetrics

    from bigtrain.data.sklearn import SklearnDataModule
    from bigtrain.metrics import build_metrics
    from bigtrain.models import build_model
    from bigtrain.optim import build_optimizer, build_scheduler

    cfg = _setup([f"trainer.max_epochs={epochs}"])
    dm = SklearnDataModule(cfg.data, seed=cfg.seed)
    dm.setup()
    x, y = dm.splits["train"]
    model = build_model(cfg.model, dm.spec.input_shape, dm.spec.num_outputs)
    batch = cfg.data.batch_size
    steps_per_epoch = len(y) // batch
    optimizer = build_optimizer(cfg.optim, model)
    scheduler = build_scheduler(cfg.sched, optimizer, steps_per_epoch * epochs)["scheduler"]
    metrics = build_metrics("multiclass", dm.spec.num_classes, cfg.metrics.names)
    mean_loss = torchmetrics.MeanMetric()
    clock = StepClock(cfg.callbacks.throughput.warmup)
    with (workdir / f"hand{time.monotonic_ns()}.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        for epoch in range(epochs):
            model.train()
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
            order = torch.randperm(len(y), generator=gen)
            clock.epoch_start()
            for step in range(steps_per_epoch):
                idx = order[step * batch : (step + 1) * batch]
                xb, yb = x[idx], y[idx]
                logits = model(xb)
                loss = torch.nn.functional.cross_entropy(logits, yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if clock.seen % cfg.trainer.log_every_n_steps == 0:
                    _log_row(writer, clock.seen, loss, model, optimizer)
                optimizer.step()
                scheduler.step()
                mean_loss.update(loss.detach(), weight=yb.numel())
                metrics.update(torch.softmax(logits.detach(), -1), yb)
                clock.step_end()
            metrics.compute()
            mean_loss.compute()
            metrics.reset()
            mean_loss.reset()
    return clock.per_step


def transformer_handwritten(workdir: Path) -> float:
    """The transformer case as a plain loop over the same windows; seconds per step."""
    import torch
    import torchmetrics

    from bigtrain.data.text import TextDataModule
    from bigtrain.metrics import build_metrics
    from bigtrain.models import build_model
    from bigtrain.optim import build_optimizer, build_scheduler

    cfg = _setup(TRANSFORMER)
    dm = TextDataModule(cfg.data, seed=cfg.seed)
    dm.setup()
    windows = dm.splits["train"]
    model = build_model(cfg.model, dm.spec.input_shape, dm.spec.num_outputs)
    batch = cfg.data.batch_size
    steps = len(windows) // batch
    optimizer = build_optimizer(cfg.optim, model)
    scheduler = build_scheduler(cfg.sched, optimizer, steps)["scheduler"]
    metrics = build_metrics("lm", dm.spec.num_classes, cfg.metrics.names) if cfg.metrics.train else None
    mean_loss = torchmetrics.MeanMetric()
    clock = StepClock(cfg.callbacks.throughput.warmup)
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003)
    order = torch.randperm(len(windows), generator=gen)
    model.train()
    with (workdir / f"hand{time.monotonic_ns()}.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        clock.epoch_start()
        for step in range(steps):
            w = windows[order[step * batch : (step + 1) * batch]]
            x, y = w[:, :-1].long(), w[:, 1:].long()
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if step % cfg.trainer.log_every_n_steps == 0:
                _log_row(writer, step, loss, model, optimizer)
            optimizer.step()
            scheduler.step()
            mean_loss.update(loss.detach(), weight=y.numel())
            if metrics is not None:
                metrics.update(logits.detach().argmax(-1).flatten(), y.flatten())
            clock.step_end()
    mean_loss.compute()
    return clock.per_step


def mlp_lightning_floor(epochs: int) -> float:
    """The default run's work in the smallest Lightning module and Trainer that do it (no
    logging, callbacks, checkpoints or loggers): Lightning's own cost, for reference."""
    import pytorch_lightning as pl
    import torch
    import torchmetrics

    from bigtrain.data.sklearn import SklearnDataModule
    from bigtrain.metrics import build_metrics
    from bigtrain.models import build_model
    from bigtrain.optim import build_optimizer, build_scheduler

    cfg = _setup([f"trainer.max_epochs={epochs}"])
    dm = SklearnDataModule(cfg.data, seed=cfg.seed)
    dm.setup()
    steps = len(dm.splits["train"][1]) // cfg.data.batch_size * epochs
    clock = StepClock(cfg.callbacks.throughput.warmup)

    class Bare(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = build_model(cfg.model, dm.spec.input_shape, dm.spec.num_outputs)
            self.metrics = build_metrics("multiclass", dm.spec.num_classes, cfg.metrics.names)
            self.mean_loss = torchmetrics.MeanMetric()

        def training_step(self, b, i):
            x, y = b
            logits = self.model(x)
            loss = torch.nn.functional.cross_entropy(logits, y)
            self.mean_loss.update(loss.detach(), weight=y.numel())
            self.metrics.update(torch.softmax(logits.detach(), -1), y)
            return loss

        def on_train_epoch_start(self) -> None:
            clock.epoch_start()

        def on_train_batch_end(self, *args) -> None:
            clock.step_end()

        def on_train_epoch_end(self) -> None:
            self.metrics.compute(), self.mean_loss.compute()
            self.metrics.reset(), self.mean_loss.reset()

        def configure_optimizers(self):
            opt = build_optimizer(cfg.optim, self.model)
            return {"optimizer": opt, "lr_scheduler": build_scheduler(cfg.sched, opt, steps)}

    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(Bare(), train_dataloaders=dm.train_dataloader())
    return clock.per_step


# --------------------------------------------------------------------------- the loader case


def loader_tokens_per_s(workdir: Path, seq_len: int, batch: int, steps: int = 400) -> tuple[float, float]:
    """(bigtrain's RandomWindowLoader, a plain numpy gather) in tokens/s over a real token file."""
    import numpy as np
    import torch

    from bigtrain.data.tokens import RandomWindowLoader

    path = workdir / "tokens.bin"
    if not path.exists():
        data = np.random.default_rng(0).integers(0, 50257, size=16_000_000, dtype=np.uint16)
        data.tofile(path)
    tokens = np.memmap(path, dtype=np.uint16, mode="r")
    loader = RandomWindowLoader(tokens, 0, len(tokens), seq_len, batch, steps, seed=1, epoch=lambda: 0)
    start, n = time.perf_counter(), 0
    for (x,) in loader:
        n += x.numel()
    ours = n / (time.perf_counter() - start)
    offsets = np.arange(seq_len + 1)
    rng = np.random.default_rng(1)  # one generator for the run, as a hand-written loop would have
    start, n = time.perf_counter(), 0
    for _ in range(steps):
        starts = rng.integers(0, len(tokens) - seq_len, size=batch)
        x = torch.from_numpy(tokens[starts[:, None] + offsets].astype(np.int64))
        n += x.numel()
    return ours, n / (time.perf_counter() - start)


# --------------------------------------------------------------------------- the CLI case


def cli_seconds(args: list[str], cwd: Path, expect: int) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bigtrain", *args], cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != expect:
        raise SystemExit(f"bench: `bigtrain {' '.join(args)}` exited {proc.returncode}: {proc.stderr[-500:]}")
    return seconds


# name: (arguments, the exit status they must end with)
CLI_CASES = {
    "--help": (["--help"], 0),
    "invalid override": (["optim.lr=-1"], 2),
    "dry_run (default run)": (["dry_run=true", "callbacks.print_config=false"], 0),
    "dry_run (+experiment=llama_7b)": (
        ["+experiment=llama_7b", "dry_run=true", "callbacks.print_config=false"],
        0,
    ),
}


# --------------------------------------------------------------------------- driver


def paired(name: str, ours, theirs, reps: int, reference=None) -> dict:
    """Alternate the order within each pair; the ratio is the median of the pairs' ratios."""
    a, b, r, ref = [], [], [], []
    for rep in range(reps):
        if rep % 2:
            y = theirs()
            x = ours()
        else:
            x = ours()
            y = theirs()
        a.append(x)
        b.append(y)
        r.append(x / y)
        if reference is not None:
            ref.append(reference() / y)
    row = {
        "case": name,
        "bigtrain": statistics.median(a),
        "handwritten": statistics.median(b),
        "ratio": statistics.median(r),
        "ratios": [round(v, 4) for v in r],
        "unit": "s/step",
    }
    if ref:
        row["lightning_floor_ratio"] = statistics.median(ref)
    return row


def run_cases(cases: list[str], reps: int, epochs: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "mlp" in cases:
            rows.append(
                paired(
                    "digits MLP (default run)",
                    lambda: bigtrain_step_seconds([f"trainer.max_epochs={epochs}"], work),
                    lambda: mlp_handwritten(epochs, work),
                    reps,
                    reference=lambda: mlp_lightning_floor(epochs),
                )
            )
        if "transformer" in cases:
            rows.append(
                paired(
                    "tiny Transformer (gpt/tiny, bytes)",
                    lambda: bigtrain_step_seconds(TRANSFORMER, work),
                    lambda: transformer_handwritten(work),
                    reps,
                )
            )
        if "loader" in cases:
            for seq_len, batch in ((128, 16), (1024, 8)):
                got = [loader_tokens_per_s(work, seq_len, batch) for _ in range(reps)]
                ours, plain = statistics.median(g[0] for g in got), statistics.median(g[1] for g in got)
                rows.append(
                    {
                        "case": f"token loader, {batch} x {seq_len + 1} tokens",
                        "bigtrain": ours,
                        "handwritten": plain,
                        "ratio": plain / ours,
                        "unit": "tokens/s",
                    }
                )
        if "cli" in cases:
            for name, (args, expect) in CLI_CASES.items():
                times = [cli_seconds(args, work, expect) for _ in range(reps)]
                rows.append({"case": f"CLI {name}", "bigtrain": statistics.median(times), "unit": "s"})
    return rows


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    if unit == "tokens/s":
        return f"{value / 1e6:.1f} M/s"
    if unit == "s/step":
        return f"{value * 1e3:.2f} ms"
    return f"{value:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    choices = ["mlp", "transformer", "loader", "cli"]
    parser.add_argument("--cases", nargs="+", default=choices, choices=choices)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=6, help="epochs of each MLP run")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    import logging
    import warnings

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    rows = run_cases(args.cases, args.reps, args.epochs)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bigtrain vs hand-written PyTorch (median of {args.reps}; ratio: lower is better)")
    for col in ("case", "bigtrain", "hand-written", "ratio", "Lightning alone"):
        table.add_column(col, justify="left" if col == "case" else "right")
    for r in rows:
        floor = r.get("lightning_floor_ratio")
        table.add_row(
            r["case"],
            _fmt(r["bigtrain"], r["unit"]),
            _fmt(r.get("handwritten"), r["unit"]),
            "" if "ratio" not in r else f"{r['ratio']:.3f}",
            "" if floor is None else f"{floor:.3f}",
        )
    Console().print(table)
    print(json.dumps(rows, indent=2))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
