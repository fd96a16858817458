"""Batches and batch limits: what an epoch trains, and what Lightning is asked to run.

- A training split smaller than one global batch is refused with one line, before a run directory
  exists (it used to train 0 steps and report `completed`).
- `data.drop_last=false` (the default) trains the epoch's last, smaller global batch, cut into
  equal micro-batches; `true` drops it. The plan shows the steps per epoch and what is dropped.
- `trainer.limit_*_batches` and `val_check_interval`: an int counts batches, a float is a fraction.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch

from bigtrain.build import build_module, build_trainer
from bigtrain.config import ConfigError, ConstantSchedConfig, SGDConfig
from bigtrain.data import build_datamodule, data_spec
from bigtrain.data.batches import check_loaded, epoch_batches, limited_steps, split_train_size
from bigtrain.data.tensors import TensorLoader
from bigtrain.runs.plan import make_plan, print_plan
from bigtrain.training.module import BigtrainModule
from conftest import QUIET, bigtrain_cmd, make_cfg


def write_wine(path: Path) -> Path:
    """scikit-learn's wine (178 rows, 13 features, 3 classes) as a CSV: 124 training rows."""
    from sklearn.datasets import load_wine

    wine = load_wine()
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow([*wine.feature_names, "target"])
        for row, label in zip(wine.data.tolist(), wine.target.tolist(), strict=True):
            out.writerow([*row, label])
    return path


def write_pngs(root: Path, per_class: int, split_folders: bool = False) -> Path:
    """scikit-learn's 8x8 digits as grey PNGs in root/<digit>/ (or root/<split>/<digit>/)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    counts: Counter = Counter()
    for i, (img, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        if counts[label] >= per_class:
            continue
        split = ("train", "val", "test")[counts[label] % 3] if split_folders else ""
        counts[label] += 1
        folder = root / split / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img * 16).clip(0, 255).astype("uint8")).save(folder / f"{i}.png")
    return root


def wine_overrides(path: Path, *extra: str) -> list[str]:
    return ["data=csv", f"data.path={path}", "data.target=target", *extra]


# --------------------------------------------------------------------------- zero-step runs


@pytest.mark.parametrize("kind", ["wine", "images"])
def test_a_training_split_smaller_than_one_global_batch_is_one_line_before_any_run_directory(tmp_path, kind):
    if kind == "wine":
        args = wine_overrides(write_wine(tmp_path / "wine.csv"), "data.batch_size=128")
        want = (
            "data=csv: the training split has 124 samples, fewer than one global batch (data.batch_size=128)"
        )
        fix = "set data.batch_size=124 or smaller"
    else:
        root = write_pngs(tmp_path / "digits", per_class=8)  # 80 images: 56 for training
        args = ["data=image_folder", f"data.root={root}", "data.channels=1", "data.image_size=8"]
        want = "data=image_folder: the training split has 56 samples, fewer than one global batch (data.batch_size=64)"
        fix = "set data.batch_size=56 or smaller"
    out = bigtrain_cmd(*QUIET, *args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"bigtrain: error: {want}") and lines[0].endswith(fix)
    assert not (tmp_path / "outputs").exists()


def test_the_split_size_is_known_at_validation_for_split_folders_and_by_fractions(tmp_path):
    root = write_pngs(tmp_path / "split", per_class=12, split_folders=True)  # 4 per class in train/
    args = ["data=image_folder", f"data.root={root}", "data.channels=1", "data.image_size=8"]
    with pytest.raises(ConfigError, match="has 40 samples.*data.batch_size=40 or smaller"):
        make_cfg(args)
    assert make_cfg([*args, "data.batch_size=40"]).data.batch_size == 40
    # The arithmetic of the stratified split is scikit-learn's (data/sklearn.split).
    from sklearn.model_selection import train_test_split

    for n in (80, 178, 400, 1797):
        rest, _ = train_test_split(list(range(n)), test_size=0.15, random_state=0)
        train, _ = train_test_split(rest, test_size=0.15 / 0.85, random_state=0)
        assert split_train_size(n, 0.15, 0.15) == len(train), n


def test_with_several_processes_the_fix_is_a_multiple_of_the_split(tmp_path):
    args = wine_overrides(write_wine(tmp_path / "wine.csv"), "data.batch_size=128")
    with pytest.raises(ConfigError, match="data.batch_size=120 or smaller"):
        make_cfg([*args, "trainer.accumulate_grad_batches=8"])


def test_a_split_known_only_after_setup_is_refused_before_the_trainer():
    cfg = make_cfg([])  # digits, global batch 64
    small = SimpleNamespace(splits={"train": (torch.zeros(10, 3), torch.zeros(10))})
    with pytest.raises(ConfigError, match="has 10 samples.*data.batch_size=10 or smaller"):
        check_loaded(cfg, small)
    check_loaded(cfg, SimpleNamespace(splits={"train": torch.zeros(64, 3)}))  # one global batch
    check_loaded(cfg, SimpleNamespace())  # no split in memory (a token corpus): nothing to check


# --------------------------------------------------------------------------- the last, smaller batch


class SeenRows(pl.Callback):
    """The training inputs of every micro-batch, per epoch."""

    def __init__(self) -> None:
        self.epochs: list[list[torch.Tensor]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epochs.append([])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self.epochs[-1].append(batch[0].clone())


def _fit_wine(tmp_path: Path, *extra: str) -> tuple[SeenRows, pl.Trainer, torch.Tensor]:
    wine = wine_overrides(write_wine(tmp_path / "wine.csv"), "data.batch_size=64")
    limits = ["trainer.max_epochs=2", "trainer.limit_val_batches=0"]
    cfg = make_cfg([*QUIET, *wine, "logger=none", "callbacks.plots=false", *limits, *extra])
    pl.seed_everything(cfg.seed, verbose=False)
    seen, dm = SeenRows(), build_datamodule(cfg)
    trainer = build_trainer(cfg, tmp_path, [seen], [])
    trainer.fit(build_module(cfg, data_spec(cfg)), datamodule=dm)
    return seen, trainer, dm.splits["train"][0]


def _rows(x: torch.Tensor) -> Counter:
    return Counter(map(tuple, x.tolist()))


def test_without_drop_last_the_last_smaller_batch_is_trained_and_every_row_seen_once(tmp_path):
    seen, trainer, train = _fit_wine(tmp_path)
    assert trainer.global_step == 4 and trainer.estimated_stepping_batches == 4  # 2 steps an epoch
    for epoch in seen.epochs:
        assert [len(b) for b in epoch] == [64, 60]  # 124 training rows
        assert _rows(torch.cat(epoch)) == _rows(train)  # each row exactly once
    assert not torch.equal(torch.cat(seen.epochs[0]), torch.cat(seen.epochs[1]))  # reshuffled


def test_with_drop_last_the_last_smaller_batch_is_dropped(tmp_path):
    seen, trainer, _ = _fit_wine(tmp_path, "data.drop_last=true")
    assert trainer.global_step == 2 and [len(b) for e in seen.epochs for b in e] == [64, 64]


def _micro_batches(n: int, world: int, accumulation: int, drop_last: bool = False) -> list[list]:
    """Every rank's micro-batches of epoch 0 of `n` samples, global batch 16."""
    kw = {
        "shuffle": True,
        "seed": 5,
        "world_size": world,
        "accumulation": accumulation,
        "drop_last": drop_last,
    }
    return [[b for (b,) in TensorLoader([torch.arange(n)], 16, rank=r, **kw)] for r in range(world)]


@pytest.mark.parametrize("n", [100, 101])  # a last step of 4 samples; of 5, of which 1 cannot be split
def test_the_last_smaller_step_is_the_same_over_two_processes_as_with_accumulation_two(n):
    two_ranks = _micro_batches(n, world=2, accumulation=1)
    accumulated = _micro_batches(n, world=1, accumulation=2)[0]
    assert len(two_ranks[0]) == len(two_ranks[1]) == 7 and len(accumulated) == 14  # 6 full steps + 1
    for step in range(7):
        # Micro-batch a of rank r is micro-batch a x world + r of the step: the same samples.
        assert torch.equal(two_ranks[0][step], accumulated[2 * step])
        assert torch.equal(two_ranks[1][step], accumulated[2 * step + 1])
        sizes = {len(two_ranks[0][step]), len(two_ranks[1][step])}
        assert sizes == ({8} if step < 6 else {2})  # equal micro-batches within a step
    used = torch.cat(accumulated)
    assert len(used) == 100 and len(set(used.tolist())) == 100  # at most world x accumulation - 1 dropped
    alone = _micro_batches(n, world=1, accumulation=1)[0]
    assert [len(b) for b in alone] == [16] * 6 + [n - 96]  # one process drops nothing
    assert [len(b) for b in _micro_batches(n, world=1, accumulation=2, drop_last=True)[0]] == [8] * 12
    assert epoch_batches(n, 16, 2, drop_last=False).dropped == n - 100


def test_a_resume_inside_the_last_smaller_step_continues_with_its_micro_batches():
    x = torch.arange(101)

    def loader(**kw) -> TensorLoader:
        return TensorLoader([x], 16, shuffle=True, seed=5, accumulation=2, drop_last=False, **kw)

    whole = [b for (b,) in loader()]
    resumed = loader()
    resumed.load_state_dict({"epoch": 0, "consumed": 13})  # half-way through the last step
    rest = [b for (b,) in resumed]
    assert len(rest) == 1 and torch.equal(rest[0], whole[13])
    finished = loader(epoch=lambda: 0)
    finished.load_state_dict({"epoch": 0, "consumed": len(whole)})  # the epoch is done: the next one
    assert torch.equal(
        torch.cat([b for (b,) in finished]), torch.cat([b for (b,) in loader(epoch=lambda: 1)])
    )


class TokenModule(BigtrainModule):
    """A token-level loss, summed per micro-batch and rescaled per step (training/accumulation.py)."""

    def training_step(self, batch, batch_idx):
        tokens, targets = batch
        loss, _ = self.token_mean.micro_batch_loss(self(tokens), targets)
        return loss


def test_token_level_loss_of_the_last_smaller_step_matches_one_batch():
    vocab = 11
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, vocab, (44, 6), generator=gen)  # global batch 32: steps of 32 and 12
    targets = torch.randint(0, vocab, (44, 6), generator=gen)
    targets[32:35, 2:] = -100  # an uneven count of real tokens in the last step's micro-batches

    def tiny() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Embedding(vocab, 8), torch.nn.Linear(8, vocab))

    reference = tiny()
    for rows in (slice(0, 32), slice(32, 44)):  # two SGD steps, each on its whole batch
        reference.zero_grad()
        loss = torch.nn.functional.cross_entropy(
            reference(tokens[rows]).flatten(0, 1), targets[rows].flatten()
        )
        loss.backward()
        with torch.no_grad():
            for p in reference.parameters():
                p -= 0.5 * p.grad
    expected = torch.cat([p.detach().flatten() for p in reference.parameters()])
    for acc in (1, 4):  # 4: micro-batches of 8, then of 3
        module = TokenModule(
            tiny(),
            task="multiclass",
            num_classes=vocab,
            optim=SGDConfig(name="sgd", lr=0.5, momentum=0.0, nesterov=False, weight_decay=0.0,
                            no_decay=["bias", "norm", "embedding"], implementation="auto"),
            sched=ConstantSchedConfig(name="constant", interval="step", warmup_steps=0,
                                      warmup_fraction=0.0, min_lr_ratio=0.0),
            metric_names=["acc"],
            train_metrics=False,
        )  # fmt: skip
        loader = TensorLoader([tokens, targets], 32, shuffle=False, accumulation=acc, drop_last=False)
        assert len(loader) == 2 * acc
        trainer = pl.Trainer(accelerator="cpu", max_epochs=1, accumulate_grad_batches=acc, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
        trainer.fit(module, train_dataloaders=loader)
        assert trainer.global_step == 2
        got = torch.cat([p.detach().flatten() for p in module.model.parameters()])
        assert torch.allclose(got, expected, atol=1e-6), acc


# --------------------------------------------------------------------------- the plan


@pytest.mark.parametrize(
    ("extra", "steps", "dropped", "last"),
    [
        ([], 20, 0, 41),  # 1257 = 19 x 64 + 41
        (["data.drop_last=true"], 19, 41, 64),
        (["strategy=ddp", "trainer.accelerator=cpu", "trainer.devices=2"], 20, 1, 40),
        # 5 micro-batches of 2 per step: 3 steps; the last step's 41 samples split in 2 x 20
        (["trainer.accumulate_grad_batches=2", "trainer.limit_train_batches=5"], 3, 1, 40),
    ],
)
def test_the_plan_shows_steps_per_epoch_and_what_is_dropped(capsys, monkeypatch, extra, steps, dropped, last):
    monkeypatch.setenv("COLUMNS", "200")  # one table row per line
    cfg = make_cfg([*QUIET, *extra])
    plan = make_plan(cfg, data_spec(cfg))
    b = plan["batch"]
    assert (b["train_samples"], b["steps_per_epoch"], b["dropped_per_epoch"]) == (1257, steps, dropped)
    assert b["last_step_batch"] == last and b["drop_last"] == ("data.drop_last=true" in extra)
    json.dumps(plan)  # plan.json
    print_plan(plan)
    row = next(line for line in capsys.readouterr().out.splitlines() if "optimizer steps per epoch" in line)
    assert f"{steps} (1,257: {'all full' if last == 64 else f'last {last}'}, {dropped} dropped)" in row


def test_limited_steps_count_micro_batches_as_lightning_does():
    assert (
        limited_steps(20, 1, 5) == 5 and limited_steps(20, 1, 0.5) == 10 and limited_steps(20, 1, 1.0) == 20
    )
    assert limited_steps(20, 2, 5) == 3  # 5 micro-batches: 2 full accumulations and a last one


# --------------------------------------------------------------------------- batch limits


@pytest.mark.parametrize(
    ("key", "value", "kept"),
    [
        ("limit_val_batches", "1", 1),
        ("limit_val_batches", "1.0", 1.0),
        ("limit_val_batches", "0.25", 0.25),
        ("limit_train_batches", "3", 3),
        ("val_check_interval", "1.0", 1.0),
        ("val_check_interval", "5", 5),
    ],
)
def test_an_int_stays_an_int_and_a_float_a_float(key, value, kept):
    got = getattr(make_cfg([f"trainer.{key}={value}"]).trainer, key)
    assert got == kept and type(got) is type(kept)


def test_the_default_validation_interval_is_the_float_one():
    interval = make_cfg([]).trainer.val_check_interval  # conf/trainer/default.yaml: 1.0
    assert interval == 1.0 and isinstance(interval, float)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "trainer.limit_val_batches=1.5",
            "trainer.limit_val_batches=1.5 is a fraction above 1: give a float in [0, 1]",
        ),
        ("trainer.limit_test_batches=2.0", "or trainer.limit_test_batches=2 for 2 batches"),
        (
            "trainer.val_check_interval=3.0",
            "give a float in (0, 1] (1.0 = all), or trainer.val_check_interval=3",
        ),
        (
            "trainer.limit_val_batches=-1",
            "trainer.limit_val_batches=-1 is out of range: it must be at least 0",
        ),
        ("trainer.limit_train_batches=0", "trainer.limit_train_batches=0 is out of range"),
        ("trainer.val_check_interval=0", "trainer.val_check_interval=0 is out of range"),
    ],
)
def test_out_of_range_limits_are_one_line_each(override, message):
    with pytest.raises(ConfigError) as e:
        make_cfg([override])
    assert len(e.value.lines) == 1 and message in e.value.lines[0]


class CountBatches(pl.Callback):
    """Batches Lightning ran: training, validation (per validation run, no sanity check), test."""

    def __init__(self) -> None:
        self.train = 0
        self.validations: list[int] = []
        self.test = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.train += 1

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.validations.append(0)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx=0):
        if not trainer.sanity_checking:
            self.validations[-1] += 1

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx=0):
        self.test += 1


# digits: 20 training batches of 64; 270 validation and 270 test samples in 9 batches of 32 each.
@pytest.mark.parametrize(
    ("limits", "train", "validations", "test"),
    [
        # ints: batches. Validation every 3 training batches, 1 batch each.
        (["limit_train_batches=6", "val_check_interval=3", "limit_val_batches=1", "limit_test_batches=2"],
         6, [1, 1], 2),
        # floats: fractions. Half of 20 training batches, validated half-way, on 4 of 9 batches.
        (["limit_train_batches=0.5", "val_check_interval=0.5", "limit_val_batches=0.5", "limit_test_batches=0.5"],
         10, [4, 4], 4),
        # 1.0 is everything (it was the only float that a "1" became).
        (["limit_train_batches=1.0", "val_check_interval=1.0", "limit_val_batches=1.0", "limit_test_batches=1.0"],
         20, [9], 9),
    ],
)  # fmt: skip
def test_lightning_runs_the_batches_the_limits_say(tmp_path, limits, train, validations, test):
    cfg = make_cfg(
        [*QUIET, "logger=none", "callbacks.plots=false", "trainer.max_epochs=1", "data.eval_batch_size=32"]
        + [f"trainer.{x}" for x in limits]
    )
    pl.seed_everything(cfg.seed, verbose=False)
    count, dm = CountBatches(), build_datamodule(cfg)
    trainer = build_trainer(cfg, tmp_path, [count], [])
    module = build_module(cfg, data_spec(cfg))
    trainer.fit(module, datamodule=dm)
    trainer.test(module, datamodule=dm, verbose=False)
    assert (count.train, count.validations, count.test) == (train, validations, test)
