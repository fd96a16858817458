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
               The default runs 32 optimizer steps per Lightning batch (trainer.steps_per_call
               =auto); for reference the same run with one step per batch (Lightning driving
               every step), and a bare Lightning module doing the same work with no bigtrain
               around it: what Lightning itself costs per step. Then the same comparison
               with bigtrain and the plain loop taking turns epoch by epoch in one process
               (--interleaved-epochs), --interleaved-runs times with the default steps_per_call
               and once with 1, each run in a fresh process: the median of all epoch pairs'
               ratios, their middle half, each run's median and the ratio of mean times.
               Between run-level epochs the plain loop validates and saves a checkpoint
               (untimed), as bigtrain does.
  transformer  gpt/tiny on the standard library's source (bytes, 128-token windows, 16 per
               step, AdamW and cosine), with the same logging as above: run-level pairs of one
               epoch, then interleaved epochs (--transformer-epochs) as for the MLP.
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


class HandLoop:
    """A plain PyTorch training loop over in-memory data, one epoch per `epoch()`: what
    bigtrain does for a step, with no framework around it. Subclasses load the data and say
    what one step's loss and metric update are."""

    def __init__(self, cfg, model, data, num_classes: int, task: str, epochs: int, workdir: Path) -> None:
        import torch
        import torchmetrics

        from bigtrain.training.metrics import build_metrics
        from bigtrain.training.optim import build_optimizer, build_scheduler

        self.cfg, self.model, self.data, self.torch = cfg, model, data, torch
        self.batch = cfg.data.batch_size
        self.steps_per_epoch = len(data) // self.batch
        self.optimizer = build_optimizer(cfg.optim, model)
        total = self.steps_per_epoch * epochs
        self.scheduler = build_scheduler(cfg.sched, self.optimizer, total)["scheduler"]
        self.metrics = build_metrics(task, num_classes, cfg.metrics.names) if cfg.metrics.train else None
        self.mean_loss = torchmetrics.MeanMetric()
        self.clock = StepClock(cfg.callbacks.throughput.warmup)
        self.file = (workdir / f"hand{time.monotonic_ns()}.csv").open("w", newline="")
        self.writer = csv.writer(self.file)
        self.epochs_run = 0

    def loss_and_update(self, idx):
        """(loss, targets, metric inputs) of the micro-batch at `idx`."""
        raise NotImplementedError

    def epoch(self) -> float:
        """One epoch; returns its seconds per step, from its start to the end of its last step."""
        torch, clock, batch, model, optimizer = self.torch, self.clock, self.batch, self.model, self.optimizer
        model.train()
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.epochs_run)
        self.epochs_run += 1
        start = time.perf_counter()
        order = torch.randperm(len(self.data), generator=gen)
        clock.epoch_start()
        for step in range(self.steps_per_epoch):
            loss, targets, preds = self.loss_and_update(order[step * batch : (step + 1) * batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clock.seen % self.cfg.trainer.log_every_n_steps == 0:
                _log_row(self.writer, clock.seen, loss, model, optimizer)
            optimizer.step()
            self.scheduler.step()
            self.mean_loss.update(loss.detach(), weight=targets.numel())
            if self.metrics is not None:
                self.metrics.update(preds, targets)
            clock.step_end()
        seconds = (time.perf_counter() - start) / self.steps_per_epoch
        self.mean_loss.compute()
        self.mean_loss.reset()
        if self.metrics is not None:
            self.metrics.compute()
            self.metrics.reset()
        return seconds


class HandMLP(HandLoop):
    """The default run (digits MLP) as a plain loop."""

    def __init__(self, epochs: int, workdir: Path) -> None:
        from bigtrain.data.sklearn import SklearnDataModule
        from bigtrain.models import build_model
        from bigtrain.training.metrics import build_metrics

        cfg = _setup([f"trainer.max_epochs={epochs}"])
        dm = SklearnDataModule(cfg.data, seed=cfg.seed)
        dm.setup()
        self.x, self.y = dm.splits["train"]
        self.val_x, self.val_y = dm.splits["val"]
        model = build_model(cfg.model, dm.spec.input_shape, dm.spec.num_outputs)
        super().__init__(cfg, model, self.y, dm.spec.num_classes, "multiclass", epochs, workdir)
        self.val_metrics = build_metrics("multiclass", dm.spec.num_classes, cfg.metrics.names)
        self.checkpoint = workdir / f"hand{time.monotonic_ns()}.pt"

    def validate_and_save(self) -> None:
        """What bigtrain does between two training epochs (not timed, but it leaves the caches
        as bigtrain's does): the validation split through the model with the loss and metrics,
        then a checkpoint of the model and optimizer."""
        torch, model, step = self.torch, self.model, self.cfg.data.eval_batch_size
        model.eval()
        with torch.no_grad():
            for start in range(0, len(self.val_y), step):
                xb, yb = self.val_x[start : start + step], self.val_y[start : start + step]
                logits = model(xb)
                self.mean_loss.update(torch.nn.functional.cross_entropy(logits, yb), weight=yb.numel())
                self.val_metrics.update(torch.softmax(logits, -1), yb)
        self.mean_loss.compute()
        self.mean_loss.reset()
        self.val_metrics.compute()
        self.val_metrics.reset()
        model.train()
        torch.save({"model": model.state_dict(), "optimizer": self.optimizer.state_dict()}, self.checkpoint)

    def loss_and_update(self, idx):
        xb, yb = self.x[idx], self.y[idx]
        logits = self.model(xb)
        loss = self.torch.nn.functional.cross_entropy(logits, yb)
        return loss, yb, self.torch.softmax(logits.detach(), -1)


def mlp_handwritten(epochs: int, workdir: Path) -> float:
    """The default run as a plain loop; seconds per step."""
    hand = HandMLP(epochs, workdir)
    for _ in range(epochs):
        hand.epoch()
        hand.validate_and_save()
    hand.file.close()
    return hand.clock.per_step


def interleaved(
    hand_loop, epochs: int, workdir: Path, overrides: list[str]
) -> tuple[list[float], list[float]]:
    """bigtrain and a plain loop (HandMLP or HandTransformer) taking turns epoch by epoch in one
    process: a callback runs one plain epoch before each bigtrain epoch (odd epochs) or after it
    (even ones). Returns the seconds per step of each side's epochs (epoch start to the end of
    its last training step) after 2 warm-up epochs. Interleaving at the scale of one epoch takes
    the machine's drift, which run-level pairs only halve, out of the comparison."""
    import pytorch_lightning as pl

    import bigtrain

    hand = hand_loop(epochs, workdir)
    ours_times: list[float] = []
    hand_times: list[float] = []

    class Turns(pl.Callback):
        def __init__(self) -> None:
            self.hand_time = 0.0
            self.start = self.last = 0.0
            self.steps = 0

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            if trainer.current_epoch % 2:
                self.hand_time = hand.epoch()
            self.start, self.steps = time.perf_counter(), trainer.global_step

        def on_train_batch_end(self, trainer, pl_module, *args) -> None:
            self.last = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            ours = (self.last - self.start) / (trainer.global_step - self.steps)
            if trainer.current_epoch % 2 == 0:
                self.hand_time = hand.epoch()
            if trainer.current_epoch >= 2:
                ours_times.append(ours)
                hand_times.append(self.hand_time)

    import bigtrain.build as build

    (turns,) = build.skip_noop_batch_hooks([Turns()])  # as bigtrain's own callbacks

    original = build.build_callbacks
    build.build_callbacks = lambda *a, **k: [*original(*a, **k), turns]
    try:
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            bigtrain.train(
                [*QUIET, f"trainer.max_epochs={epochs}", *overrides],
                run_dir=workdir / f"bt{time.monotonic_ns()}",
            )
    finally:
        build.build_callbacks = original
        hand.file.close()
    return ours_times, hand_times


def interleaved_in_child(
    loop: str, epochs: int, workdir: Path, overrides: list[str]
) -> tuple[list[float], list[float]]:
    """`interleaved` in a fresh Python process, as a user's run is, so that no run measures what
    the bench's earlier cases left in the process."""
    out = workdir / f"interleaved{time.monotonic_ns()}.json"
    spec = json.dumps({"loop": loop, "epochs": epochs, "workdir": str(workdir), "overrides": overrides})
    proc = subprocess.run(
        [sys.executable, __file__, "--one-interleaved", spec, str(out)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"bench: the interleaved {loop} run failed: {proc.stderr[-2000:]}")
    got = json.loads(out.read_text())
    return got["ours"], got["hand"]


def interleaved_row(
    name: str, loop: str, epochs: int, workdir: Path, overrides: list[str], runs: int = 1
) -> dict:
    """The interleaved comparison, `runs` times with the default steps_per_call and once with 1,
    each run in its own process: the median of all epoch pairs' ratios, their interquartile
    range, each run's median and the ratio of the two sides' mean times. A run's median moves
    by about 1% with what the machine is doing, so several runs."""

    def stats(pairs: list[tuple[list[float], list[float]]]) -> dict:
        ratios = sorted(a / b for ours, hand in pairs for a, b in zip(ours, hand, strict=True))
        n = len(ratios)
        return {
            "ratio": statistics.median(ratios),
            "ratio_iqr": [round(ratios[n // 4], 4), round(ratios[(3 * n) // 4], 4)],
            "run_ratios": [
                round(statistics.median(a / b for a, b in zip(ours, hand, strict=True)), 4)
                for ours, hand in pairs
            ],
            "ratio_of_means": statistics.mean(a for ours, _ in pairs for a in ours)
            / statistics.mean(b for _, hand in pairs for b in hand),
            "pairs": n,
        }

    fused = stats([interleaved_in_child(loop, epochs, workdir, overrides) for _ in range(runs)])
    one = stats([interleaved_in_child(loop, epochs, workdir, [*overrides, "trainer.steps_per_call=1"])])
    return {
        "case": name,
        "bigtrain": None,
        "handwritten": None,
        **fused,
        "unit": "s/step",
        "one_step_per_batch_ratio": one["ratio"],
        "one_step_per_batch_ratio_iqr": one["ratio_iqr"],
    }


class HandTransformer(HandLoop):
    """The transformer case as a plain loop over the same windows."""

    def __init__(self, epochs: int, workdir: Path) -> None:
        from bigtrain.data.text import TextDataModule
        from bigtrain.models import build_model

        cfg = _setup([*TRANSFORMER, f"trainer.max_epochs={epochs}"])
        dm = TextDataModule(cfg.data, seed=cfg.seed)
        dm.setup()
        windows = dm.splits["train"]
        model = build_model(cfg.model, dm.spec.input_shape, dm.spec.num_outputs)
        super().__init__(cfg, model, windows, dm.spec.num_classes, "lm", epochs, workdir)

    def loss_and_update(self, idx):
        w = self.data[idx]
        x, y = w[:, :-1].long(), w[:, 1:].long()
        logits = self.model(x)
        loss = self.torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
        return loss, y.flatten(), logits.detach().argmax(-1).flatten()


def transformer_handwritten(workdir: Path) -> float:
    """The transformer case (one epoch) as a plain loop; seconds per step."""
    hand = HandTransformer(1, workdir)
    hand.epoch()
    hand.file.close()
    return hand.clock.per_step


# The plain loops `interleaved` runs against, by case.
HAND_LOOPS = {"mlp": HandMLP, "transformer": HandTransformer}


def mlp_lightning_floor(epochs: int) -> float:
    """The default run's work in the smallest Lightning module and Trainer that do it (no
    logging, callbacks, checkpoints or loggers): Lightning's own cost, for reference."""
    import pytorch_lightning as pl
    import torch
    import torchmetrics

    from bigtrain.data.sklearn import SklearnDataModule
    from bigtrain.models import build_model
    from bigtrain.training.metrics import build_metrics
    from bigtrain.training.optim import build_optimizer, build_scheduler

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


def paired(name: str, ours, theirs, reps: int, references: dict | None = None) -> dict:
    """Alternate the order within each pair; the ratio is the median of the pairs' ratios.
    `references` ({key: callable}) run after each pair and are reported as ratios to the
    hand-written side of that pair, under `key`."""
    references = references or {}
    a, b, r = [], [], []
    ref: dict[str, list[float]] = {key: [] for key in references}
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
        for key, fn in references.items():
            ref[key].append(fn() / y)
    row = {
        "case": name,
        "bigtrain": statistics.median(a),
        "handwritten": statistics.median(b),
        "ratio": statistics.median(r),
        "ratios": [round(v, 4) for v in r],
        "unit": "s/step",
    }
    for key, values in ref.items():
        row[key] = statistics.median(values)
    return row


def run_cases(
    cases: list[str],
    reps: int,
    epochs: int,
    interleaved_epochs: int = 200,
    transformer_epochs: int = 8,
    interleaved_runs: int = 3,
) -> list[dict]:
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
                    references={
                        # The same run with Lightning driving every step (trainer.steps_per_call=1).
                        "one_step_per_batch_ratio": lambda: bigtrain_step_seconds(
                            [f"trainer.max_epochs={epochs}", "trainer.steps_per_call=1"], work
                        ),
                        "lightning_floor_ratio": lambda: mlp_lightning_floor(epochs),
                    },
                )
            )
            rows.append(
                interleaved_row(
                    "digits MLP, epochs interleaved",
                    "mlp",
                    interleaved_epochs,
                    work,
                    [],
                    runs=interleaved_runs,
                )
            )
        if "transformer" in cases:
            rows.append(
                paired(
                    "tiny Transformer (gpt/tiny, bytes)",
                    lambda: bigtrain_step_seconds([*TRANSFORMER, "trainer.max_epochs=1"], work),
                    lambda: transformer_handwritten(work),
                    reps,
                )
            )
            rows.append(
                interleaved_row(
                    "tiny Transformer, epochs interleaved",
                    "transformer",
                    transformer_epochs,
                    work,
                    TRANSFORMER,
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


def _ratio(value) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):  # one ratio per run
        return " ".join(f"{v:.3f}" for v in value)
    if isinstance(value, list):  # a range
        return "-".join(f"{v:.2f}" for v in value)
    return f"{value:.3f}"


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
    parser.add_argument("--epochs", type=int, default=10, help="epochs of each MLP run")
    parser.add_argument(
        "--interleaved-epochs",
        type=int,
        default=200,
        help="epochs of the interleaved MLP runs (ratios after 2)",
    )
    parser.add_argument(
        "--interleaved-runs",
        type=int,
        default=3,
        help="interleaved MLP runs with the default steps_per_call (one with 1)",
    )
    parser.add_argument(
        "--transformer-epochs", type=int, default=8, help="epochs of the interleaved Transformer runs"
    )
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    # Internal: one interleaved run (see interleaved_in_child), written as JSON to a file.
    parser.add_argument("--one-interleaved", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    import logging
    import warnings

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    if args.one_interleaved:
        spec, out = json.loads(args.one_interleaved[0]), Path(args.one_interleaved[1])
        ours, hand = interleaved(
            HAND_LOOPS[spec["loop"]], spec["epochs"], Path(spec["workdir"]), spec["overrides"]
        )
        out.write_text(json.dumps({"ours": ours, "hand": hand}))
        return
    rows = run_cases(
        args.cases,
        args.reps,
        args.epochs,
        args.interleaved_epochs,
        args.transformer_epochs,
        args.interleaved_runs,
    )
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bigtrain vs hand-written PyTorch (median of {args.reps}; ratio: lower is better)")
    columns = {
        "ratio": "ratio",
        "ratio_iqr": "middle half",
        "run_ratios": "each run",
        "one_step_per_batch_ratio": "1 step/batch",
        "lightning_floor_ratio": "Lightning alone",
    }
    for col in ("case", "bigtrain", "hand-written", *columns.values()):
        table.add_column(col, justify="left" if col == "case" else "right")
    for r in rows:
        table.add_row(
            r["case"],
            _fmt(r["bigtrain"], r["unit"]),
            _fmt(r.get("handwritten"), r["unit"]),
            *(_ratio(tuple(r[k]) if k == "run_ratios" and k in r else r.get(k)) for k in columns),
        )
    Console().print(table)
    print(json.dumps(rows, indent=2))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
