"""The training cases' competitors, and the turn-taking that runs them epoch by epoch in one process.

Competitors of a case:
  bigtrain  the run bigtrain's own builders make (build_module, build_callbacks, build_loggers,
            build_trainer) from the composed and validated config;
  bare      the same work as a plain LightningModule and Trainer: the same model class, optimizer,
            schedule, metric collection and data module, Lightning's CSV logger, learning-rate
            monitor and checkpoint callbacks, and no bigtrain callback;
  hand      a hand-written PyTorch loop (bench_loops.py);
  peer      a GPT and its loop written the way nanoGPT writes them (bench_peer.py).

Each Lightning competitor fits in a thread of its own; at every training epoch start a callback
hands control back to the bench and waits, so exactly one competitor runs at any time. A round
runs one epoch of each competitor, in an order that changes every round, and yields one time per
competitor: seconds per optimizer step over the epoch's training batches (the epoch start to the
end of its last batch; validation and checkpoints fall outside it).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchmetrics

# Lightning sets its loggers to INFO when it is imported: silence them after that.
for _name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
    logging.getLogger(_name).setLevel(logging.ERROR)

QUIET = [
    "callbacks.print_config=false",
    "callbacks.model_summary_depth=0",
    "callbacks.plots=false",
    "trainer.enable_progress_bar=false",
    "trainer.accelerator=cpu",
    "logger=csv",  # the competitors write the same CSV rows; the default adds TensorBoard
]
TRANSFORMER = [
    "model=gpt/tiny",
    "data=stdlib_text",
    "data.seq_len=128",
    "data.batch_size=16",
    "metrics=lm",
    "trainer.limit_val_batches=2",
    "callbacks.samples.enabled=false",
]
# gpt_stdlib's model, optimizer, schedule and clipping, validated at each epoch's end.
PEER = [
    "+experiment=gpt_stdlib",
    "trainer.max_steps=-1",
    "trainer.val_check_interval=1.0",
    "trainer.limit_val_batches=2",
    "callbacks.samples.enabled=false",
]
# case: (overrides, competitors)
CASES: dict[str, tuple[list[str], list[str]]] = {
    "mlp": ([], ["bigtrain", "bare", "hand"]),
    "transformer": (TRANSFORMER, ["bigtrain", "hand"]),
    "transformer-peer": (PEER, ["bigtrain", "peer"]),
}


def load_config(overrides: list[str]) -> Any:
    """The composed and validated RunConfig of `overrides`."""
    import bigtrain
    from bigtrain.runs.validate import validate

    return validate(bigtrain.compose(overrides))


def setup_data(cfg: Any) -> Any:
    """The run's data module, set up for fit, after seeding as a run does."""
    from bigtrain.data import build_datamodule

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    return dm


class TurnClock(pl.Callback):
    """Hands control back at each training epoch start and times each epoch's training batches."""

    def __init__(self) -> None:
        self.go, self.done = threading.Semaphore(0), threading.Semaphore(0)
        self.seconds: list[float] = []
        self.start = self.last = 0.0
        self.batches = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.done.release()  # this competitor's turn ends here
        self.go.acquire()
        self.batches = 0
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.last = time.perf_counter()
        self.batches += 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds.append((self.last - self.start) / self.batches)


class Competitor(Protocol):
    """What take_turns runs: set up once, then one epoch per turn."""

    def start(self) -> None:
        """Set up, untimed."""

    def turn(self) -> float:
        """One training epoch and what follows it; its seconds per optimizer step."""


class LightningSide:
    """A Lightning fit in a thread of its own that trains one epoch per `turn()`."""

    def __init__(self, trainer: pl.Trainer, module: pl.LightningModule, dm: Any, clock: TurnClock) -> None:
        self.trainer, self.module, self.dm, self.clock = trainer, module, dm, clock
        self.error: BaseException | None = None

    def _fit(self) -> None:
        """The fit, in this competitor's thread; an error is kept for the bench's thread."""
        try:
            self.trainer.fit(self.module, datamodule=self.dm)
        except BaseException as e:  # re-raised in the bench's thread
            self.error = e
        finally:
            self.clock.done.release()

    def _wait(self) -> None:
        """Until this competitor hands control back; re-raise its error if it failed."""
        self.clock.done.acquire()
        if self.error is not None:
            raise RuntimeError(f"a Lightning competitor failed: {self.error!r}") from self.error

    def start(self) -> None:
        """Set up (untimed), up to the first training epoch's start."""
        threading.Thread(target=self._fit, daemon=True).start()
        self._wait()

    def turn(self) -> float:
        """One training epoch and what follows it; its seconds per step."""
        self.clock.go.release()
        self._wait()
        return self.clock.seconds[-1]


class HandSide:
    """A hand-written loop as a competitor: an epoch (timed), then validation and a checkpoint."""

    def __init__(self, loop: Any) -> None:
        self.loop = loop

    def start(self) -> None:
        """Nothing to set up: the loop is built."""

    def turn(self) -> float:
        """One training epoch, then validation and a checkpoint; the epoch's seconds per step."""
        seconds = self.loop.epoch()
        self.loop.between()
        return seconds


def bigtrain_side(overrides: list[str], run_dir: Path) -> LightningSide:
    """bigtrain's run from its own builders, with the bench's clock as one more callback."""
    from bigtrain.build import build_callbacks, build_module, build_trainer
    from bigtrain.data import data_spec
    from bigtrain.runs.loggers import build_loggers
    from bigtrain.runs.plan import make_plan

    cfg = load_config(overrides)
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = data_spec(cfg)
    dm = setup_data(cfg)
    module = build_module(cfg, spec, getattr(dm, "stats", {}).get("bytes_per_token", 1.0))
    callbacks = build_callbacks(cfg, run_dir, module, make_plan(cfg, spec))
    clock = TurnClock()
    trainer = build_trainer(cfg, run_dir, [*callbacks.all, clock], build_loggers(cfg, run_dir))
    return LightningSide(trainer, module, dm, clock)


class BareModule(pl.LightningModule):
    """A classifier's training as the plain LightningModule a user would write for it."""

    def __init__(self, model: torch.nn.Module, metrics: torchmetrics.MetricCollection, cfg: Any) -> None:
        super().__init__()
        self.model, self.cfg = model, cfg
        self.train_metrics, self.val_metrics = metrics.clone(prefix="train/"), metrics.clone(prefix="val/")
        self.train_loss, self.val_loss = torchmetrics.MeanMetric(), torchmetrics.MeanMetric()

    def logs_now(self) -> bool:
        """Whether the loggers write this step (Lightning's rule), so values are logged only then."""
        return (self.trainer.global_step + 1) % self.trainer.log_every_n_steps == 0

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        self.train_loss.update(loss.detach(), weight=y.numel())
        self.train_metrics.update(torch.softmax(logits.detach().float(), dim=-1), y)
        if self.logs_now():
            self.log("train/loss", loss.detach(), on_step=True, on_epoch=False)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.logs_now():
            norms = [torch.linalg.vector_norm(p.grad) for p in self.model.parameters() if p.grad is not None]
            self.log("train/grad_norm", torch.linalg.vector_norm(torch.stack(norms)))

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.model(x)
        self.val_loss.update(F.cross_entropy(logits, y), weight=y.numel())
        self.val_metrics.update(torch.softmax(logits.float(), dim=-1), y)

    def log_epoch_values(
        self, loss: torchmetrics.Metric, metrics: torchmetrics.MetricCollection, key: str
    ) -> None:
        """Log an epoch's mean loss and metrics, then reset them."""
        self.log_dict({key: loss.compute(), **metrics.compute()})
        loss.reset()
        metrics.reset()

    def on_train_epoch_end(self) -> None:
        self.log_epoch_values(self.train_loss, self.train_metrics, "train/loss_epoch")

    def on_validation_epoch_end(self) -> None:
        self.log_epoch_values(self.val_loss, self.val_metrics, "val/loss")

    def configure_optimizers(self) -> dict:
        from bigtrain.training.optim import build_optimizer, build_scheduler

        optimizer = build_optimizer(self.cfg.optim, self.model)
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": build_scheduler(self.cfg.sched, optimizer, steps)}


def bare_side(overrides: list[str], run_dir: Path) -> LightningSide:
    """The bare LightningModule and a Trainer set as bigtrain sets its own, with Lightning's callbacks."""
    from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    from bigtrain.data import data_spec
    from bigtrain.models import build_model
    from bigtrain.training.metrics import build_metrics

    cfg = load_config(overrides)
    spec, dm = data_spec(cfg), setup_data(cfg)
    model = build_model(cfg.model, spec.input_shape, spec.num_outputs)
    module = BareModule(model, build_metrics(spec.task, spec.num_classes, cfg.metrics.names), cfg)
    t, clock = cfg.trainer, TurnClock()
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", monitor="val/loss", save_last=True)
    logger = CSVLogger(
        run_dir, name="", version="", flush_logs_every_n_steps=cfg.logger.csv.flush_logs_every_n_steps
    )
    trainer = pl.Trainer(
        accelerator=t.accelerator,
        devices=1,
        precision="32-true" if t.precision == "32" else t.precision,
        max_epochs=t.max_epochs,
        limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches,
        log_every_n_steps=t.log_every_n_steps,
        gradient_clip_val=t.gradient_clip_val,
        deterministic=t.deterministic,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[LearningRateMonitor(logging_interval="step"), checkpoint, clock],
        logger=logger,
        default_root_dir=str(run_dir),
    )
    return LightningSide(trainer, module, dm, clock)


def hand_side(overrides: list[str], run_dir: Path) -> HandSide:
    """The hand-written loop on the same config, data splits and initial weights."""
    from bench_loops import HandClassifier, HandLanguageModel
    from bigtrain.data import data_spec
    from bigtrain.models import build_model

    cfg = load_config(overrides)
    spec, dm = data_spec(cfg), setup_data(cfg)
    model = build_model(cfg.model, spec.input_shape, spec.num_outputs)
    splits = {k: v if isinstance(v, tuple) else (v,) for k, v in dm.splits.items()}
    loop = HandLanguageModel if spec.task == "lm" else HandClassifier
    return HandSide(loop(cfg, model, splits, spec.task, spec.num_classes, run_dir, cfg.trainer.max_epochs))


def peer_side(overrides: list[str], run_dir: Path) -> HandSide:
    """nanoGPT's way of writing the model and loop, from bigtrain's initial weights and windows."""
    from bench_peer import PeerLoop
    from bigtrain.data import data_spec
    from bigtrain.models import build_model

    cfg = load_config(overrides)
    spec, dm = data_spec(cfg), setup_data(cfg)
    model = build_model(cfg.model, spec.input_shape, spec.num_outputs)
    splits = {k: v if isinstance(v, tuple) else (v,) for k, v in dm.splits.items()}
    return HandSide(PeerLoop(cfg, model, splits, run_dir))


BUILDERS = {"bigtrain": bigtrain_side, "bare": bare_side, "hand": hand_side, "peer": peer_side}


def take_turns(sides: dict[str, Competitor], rounds: int) -> dict[str, list[float]]:
    """`rounds` rounds of one epoch per competitor; the order cycles through every permutation,
    so each competitor follows each other one equally often. Returns each one's epoch times."""
    orders = list(itertools.permutations(sides))
    times: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(rounds):
        for name in orders[r % len(orders)]:
            times[name].append(sides[name].turn())
    return times


def run_rep(
    case: str, rounds: int, extra: list[str], workdir: Path, threads: int | None = None
) -> dict[str, list[float]]:
    """One repeat of a training case in this process: every competitor's epoch times."""
    if threads:
        torch.set_num_threads(threads)
    base, names = CASES[case]
    overrides = [*QUIET, *base, f"trainer.max_epochs={rounds}", *extra]
    sides: dict[str, Competitor] = {n: BUILDERS[n](overrides, workdir / n) for n in names}
    for side in sides.values():
        side.start()
    times = take_turns(sides, rounds)
    for side in sides.values():
        if isinstance(side, HandSide):
            side.loop.close()
    return times
