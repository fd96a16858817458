"""Tricks inside real training: accumulation, clipping, EMA, SWA, the non-finite loss policy,
precision and the finders. Each test reads the effect off the weights, gradients or results."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from bigtrain.build import build_callbacks, build_module, build_trainer
from bigtrain.callbacks.finders import suggest_lr
from bigtrain.callbacks.nan_policy import NonFiniteLossError
from bigtrain.config import ConstantSchedConfig, SGDConfig
from bigtrain.data import build_datamodule, data_spec
from bigtrain.data.tensors import TensorLoader
from bigtrain.training.module import BigtrainModule
from conftest import FAST, QUIET, bigtrain_cmd, make_cfg, read_results
from nan_inject import InjectNaN
from nan_inject import extra as nan_extra

PNG = b"\x89PNG\r\n\x1a\n"


def _weights(module: pl.LightningModule) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in module.model.parameters()])


def _fit(overrides: list[str], tmp_path, extra: list | None = None, full_callbacks: bool = False):
    """Train with the real builders; returns (module, trainer, callbacks)."""
    cfg = make_cfg([*QUIET, "logger=none", "callbacks.plots=false", *overrides])
    pl.seed_everything(cfg.seed, verbose=False)
    module = build_module(cfg, data_spec(cfg))
    run = build_callbacks(cfg, tmp_path, module)
    tricks = [c for c in (run.meter, run.ema, run.swa) if c is not None]
    cbs = [*(run.all if full_callbacks else tricks), *(extra or [])]
    trainer = build_trainer(cfg, tmp_path, cbs, [])
    trainer.fit(module, datamodule=build_datamodule(cfg))
    return module, trainer, run


class StepRecorder(pl.Callback):
    """Weights at fit start and after every optimizer step; gradient norms around clipping."""

    def __init__(self) -> None:
        self.weights: list[torch.Tensor] = []
        self.epoch_start: list[torch.Tensor] = []
        self.pre_clip: list[float] = []
        self.post_clip: list[torch.Tensor] = []
        self.logged: list[float] = []
        self._step = -1

    def on_fit_start(self, trainer, pl_module):
        self.weights.append(_weights(pl_module))
        self._step = trainer.global_step

    def on_train_epoch_start(self, trainer, pl_module):
        self.epoch_start.append(_weights(pl_module))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self.pre_clip.append(float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self._step:
            return
        self._step = trainer.global_step
        self.weights.append(_weights(pl_module))
        # Lightning zeroes gradients only in the next step's closure: these are the clipped ones.
        grads = [p.grad.flatten() for p in pl_module.parameters() if p.grad is not None]
        self.post_clip.append(torch.cat(grads) if grads else torch.zeros(0))
        if "train/grad_norm" in trainer.callback_metrics:
            self.logged.append(float(trainer.callback_metrics["train/grad_norm"]))


SGD_STEPS = [
    "model.dropout=0",  # dropout masks would differ between the two splits of a batch
    "optim=sgd",
    "optim.momentum=0",
    "optim.weight_decay=0",
    "sched=constant",
    "trainer.limit_val_batches=0",
]


def test_accumulating_4_micro_batches_of_8_equals_one_batch_of_32(tmp_path):
    runs = {}
    for acc in (1, 4):
        module, trainer, _ = _fit(
            [
                *SGD_STEPS,
                "data.batch_size=32",
                f"trainer.accumulate_grad_batches={acc}",
                "trainer.max_steps=3",
            ],
            tmp_path / f"acc{acc}",
        )
        assert trainer.global_step == 3
        runs[acc] = _weights(module)
    start = _weights(build_module(make_cfg(), data_spec(make_cfg())))
    assert not torch.allclose(runs[1], start)  # the weights moved
    assert torch.allclose(runs[1], runs[4], atol=1e-6)


def test_gradient_norm_is_logged_before_clipping_and_clipped_to_the_bound(tmp_path):
    rec = StepRecorder()
    _fit(
        [*SGD_STEPS, "trainer.max_steps=4", "trainer.log_every_n_steps=2", "trainer.gradient_clip_val=0.05"],
        tmp_path,
        [rec],
    )
    assert min(rec.pre_clip) > 0.05  # clipping was active on every step
    assert len(rec.post_clip) == 4
    for post in rec.post_clip:
        assert float(post.norm()) == pytest.approx(0.05, rel=1e-4)
    # logged beside train/loss on steps 1 and 3 only (every log_every_n_steps), with the norm
    # before clipping; callback_metrics keeps the last value in between
    assert len(rec.logged) == 3 and rec.logged[0] == pytest.approx(rec.pre_clip[1], rel=1e-5)
    assert rec.logged[1] == rec.logged[0] and rec.logged[2] == pytest.approx(rec.pre_clip[3], rel=1e-5)


def test_gradient_clipping_by_value(tmp_path):
    rec = StepRecorder()
    cfg = [
        *SGD_STEPS,
        "trainer.max_steps=2",
        "trainer.gradient_clip_val=0.001",
        "trainer.gradient_clip_algorithm=value",
    ]
    _fit(cfg, tmp_path, [rec])
    for post in rec.post_clip:
        assert float(post.abs().max()) == pytest.approx(0.001)


def test_ema_weights_follow_the_recurrence_and_are_exported(tmp_path):
    rec = StepRecorder()
    overrides = [
        "tricks=ema",
        "tricks.ema.decay=0.7",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=2",
    ]
    module, trainer, run = _fit(overrides, tmp_path, [rec], full_callbacks=True)
    ema_cb = run.ema
    expected = rec.weights[0]
    for w in rec.weights[1:]:  # 6 optimizer steps
        expected = 0.7 * expected + 0.3 * w
    assert ema_cb.summary() == {"decay": 0.7, "updates": 6, "start_step": 0}
    assert not torch.allclose(expected, rec.weights[-1], atol=1e-3)  # the average differs from the weights
    assert torch.allclose(_weights(module), expected, atol=1e-6)  # the module ends with the EMA
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    names = [n for n, _ in module.named_parameters()]
    saved = torch.cat([ckpt["state_dict"][n].flatten() for n in names])
    # The training weights travel beside the EMA (Lightning's WeightAveraging layout).
    raw = torch.cat([ckpt["current_model_state"][n].flatten() for n in names])
    assert torch.allclose(saved, expected, atol=1e-6) and torch.allclose(raw, rec.weights[-1])


EMA_SHORT = [
    *QUIET,
    "logger=none",
    "model=mlp/tiny",
    "sched=constant",
    "callbacks.plots=false",
    "tricks=ema",
    "tricks.ema.decay=0.8",
    "tricks.ema.start_step=2",
    "trainer.limit_train_batches=5",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "callbacks.checkpoint.every_n_train_steps=3",
]


def _last(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


def test_ema_resumed_at_an_epoch_end_and_mid_epoch_equals_an_uninterrupted_run(tmp_path):
    import bigtrain

    whole = bigtrain.train([*EMA_SHORT, "trainer.max_epochs=4"], run_dir=tmp_path / "whole")
    bigtrain.train([*EMA_SHORT, "trainer.max_epochs=2"], run_dir=tmp_path / "epochs")
    by_epoch = bigtrain.resume(tmp_path / "epochs", ["trainer.max_epochs=4"])
    # Stops at step 8; only the mid-epoch checkpoint of step 6 is left to resume from.
    bigtrain.train([*EMA_SHORT, "trainer.max_epochs=4", "trainer.max_steps=8"], run_dir=tmp_path / "mid")
    for path in (tmp_path / "mid" / "checkpoints").glob("*.ckpt"):
        if not path.name.startswith("step"):
            path.unlink()
    mid = bigtrain.resume(tmp_path / "mid", ["trainer.max_steps=-1"])
    expected = _last(tmp_path / "whole")
    for name, results in (("epochs", by_epoch), ("mid", mid)):
        got = _last(tmp_path / name)
        for key in ("state_dict", "current_model_state"):  # the EMA and the training weights
            assert got[key].keys() == expected[key].keys()
            for k in expected[key]:
                assert torch.equal(got[key][k], expected[key][k]), (name, key, k)
        assert results["val"] == whole["val"] and results["test"] == whole["test"], name
        assert results["ema"] == whole["ema"] == {"decay": 0.8, "updates": 20, "start_step": 2}


def test_validation_and_test_run_on_the_ema_weights(tmp_path):
    import bigtrain

    overrides = [*EMA_SHORT, "tricks.ema.decay=0.9", "trainer.max_epochs=2"]
    results = bigtrain.train(overrides, run_dir=tmp_path / "run")
    ckpt = torch.load(tmp_path / "run" / results["best_checkpoint"], weights_only=True)
    cfg = make_cfg(overrides)

    def evaluate(weights: dict) -> tuple[float, float]:
        module = build_module(cfg, data_spec(cfg))
        module.load_state_dict(weights)
        trainer = build_trainer(cfg, tmp_path / "eval", [], [])
        val = trainer.validate(module, datamodule=build_datamodule(cfg), verbose=False)[0]
        test = trainer.test(module, datamodule=build_datamodule(cfg), verbose=False)[0]
        return val["val/loss"], test["test/loss"]

    val, test = evaluate(ckpt["state_dict"])  # the EMA weights of the best checkpoint
    assert results["val"]["loss"] == pytest.approx(val, rel=1e-6)
    assert results["test"]["loss"] == pytest.approx(test, rel=1e-6)
    raw_val, raw_test = evaluate(ckpt["current_model_state"])  # the training weights
    assert raw_val != pytest.approx(val, rel=1e-4) and raw_test != pytest.approx(test, rel=1e-4)


def test_swa_weights_are_the_average_of_epoch_starts(tmp_path):
    rec = StepRecorder()
    overrides = [
        "tricks=swa",
        "tricks.swa.epoch_start=0.5",
        "trainer.max_epochs=4",
        "trainer.limit_train_batches=3",
    ]
    module, _, cbs = _fit([*overrides, "trainer.limit_val_batches=0"], tmp_path, [rec])
    # Lightning averages the weights at the start of epochs swa_start..last, swa_start =
    # int(4 * 0.5) - 1 = 1 (0-based), and copies the average into the module when fit ends.
    expected = torch.stack(rec.epoch_start[1:]).mean(0)
    assert len(rec.epoch_start) == 4
    assert torch.allclose(_weights(module), expected, atol=1e-6)
    assert not torch.allclose(expected, rec.weights[-1], atol=1e-4)


def test_skip_policy_drops_nan_batches_and_records_them(tmp_path):
    rec = StepRecorder()
    overrides = [
        *SGD_STEPS,
        "trainer.max_steps=5",
        "tricks.nonfinite.policy=skip",
    ]
    inject = InjectNaN([1, 3])
    module, trainer, run = _fit(overrides, tmp_path, [rec, inject])
    policy = run.nonfinite.summary()
    assert policy["skipped"] == 2 and [b["step"] for b in policy["skipped_batches"]] == [1, 3]
    assert inject.injected == [1, 3] and policy["stopped_at_step"] is None
    w = rec.weights  # w[k] = weights after k optimizer steps
    assert torch.equal(w[2], w[1]) and torch.equal(w[4], w[3])  # skipped: not updated
    assert not torch.equal(w[1], w[0]) and not torch.equal(w[3], w[2])  # the others updated
    assert torch.isfinite(_weights(module)).all()


def test_skip_policy_stops_after_consecutive_nans(tmp_path):
    overrides = [
        *SGD_STEPS,
        "trainer.max_steps=6",
        "tricks.nonfinite.policy=skip",
        "tricks.nonfinite.max_consecutive=2",
    ]
    with pytest.raises(NonFiniteLossError, match="2 non-finite training losses in a row at optimizer step 3"):
        _fit(overrides, tmp_path, [InjectNaN([2, 3])])
    assert (tmp_path / "checkpoints" / "last-finite.ckpt").is_file()


@pytest.mark.slow
def test_stop_policy_from_the_command_line(tmp_path):
    # The NaN comes from the test's own callback, passed as a user's callback is.
    tests_dir = str(Path(__file__).parent)
    out = bigtrain_cmd(
        *FAST, nan_extra([2]), "hydra.run.dir=run", cwd=tmp_path, env={"PYTHONPATH": tests_dir}
    )
    assert out.returncode == 3, out.stderr[-2000:]
    assert (
        out.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "bigtrain: stopped: non-finite training loss (nan) at optimizer step 2 (epoch 0, batch 2)"
        )
    )
    results = read_results(tmp_path / "run")
    assert results["status"] == "failed" and results["nonfinite"]["stopped_at_step"] == 2
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last-finite.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("precision", "param", "forward"),
    [
        ("32", "float32", "float32"),
        ("bf16-mixed", "float32", "bfloat16"),
        ("bf16-true", "bfloat16", "bfloat16"),
    ],
)
def test_cpu_precisions_run_with_the_expected_dtypes(run, precision, param, forward):
    results, _ = run([*FAST, f"trainer.precision={precision}", "trainer.accelerator=cpu"])
    assert results["status"] == "completed"
    assert results["precision"] == {"setting": precision, "param_dtype": param, "forward_dtype": forward}
    assert all(v is not None for v in results["test"].values())


def test_suggest_lr_picks_the_steepest_descent():
    lrs = [10 ** (-4 + i * 0.5) for i in range(9)]
    smooth = [2.0, 1.99, 1.9, 1.5, 1.2, 1.1, 1.05, 3.0, 9.0]  # falls fastest from 1.9 to 1.2
    assert suggest_lr(lrs, smooth) == lrs[3]
    assert suggest_lr(lrs[:2], smooth[:2]) is None


@pytest.mark.slow
def test_finders_write_plots_suggestions_and_results(run):
    overrides = [
        *FAST,
        "tricks.finders.lr.enabled=true",
        "tricks.finders.lr.num_steps=40",
        "tricks.finders.lr.apply=true",
        "tricks.finders.batch_size.enabled=true",
        "tricks.finders.batch_size.max=512",
        "tricks.finders.batch_size.steps=2",
        "trainer.accumulate_grad_batches=2",
        "trainer.log_every_n_steps=1",
    ]
    results, run_dir = run(overrides)
    f = json.loads((run_dir / "results.json").read_text())["finders"]
    lr = f["lr"]
    assert 1e-6 <= lr["suggestion"] <= 1.0 and lr["applied"]
    assert min(lr["smoothed"]) < lr["smoothed"][0]  # the loss fell somewhere in the range
    lr_logged = next(r["lr/pg1"] for r in csv.DictReader((run_dir / "metrics.csv").open()) if r["lr/pg1"])
    assert float(lr_logged) == pytest.approx(lr["suggestion"])  # training used the suggestion
    bs = f["batch_size"]
    sizes = [r["micro_batch"] for r in bs["tried"]]
    assert sizes == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    best = max(r["samples_per_s"] for r in bs["tried"])
    rule = next(r["micro_batch"] for r in bs["tried"] if r["samples_per_s"] >= 0.9 * best)
    assert bs["suggested_micro_batch"] == rule and bs["suggested_global_batch"] == rule * 2
    for png in ("lr_finder.png", "batch_size_finder.png"):
        assert (run_dir / "plots" / png).read_bytes().startswith(PNG)
    assert results["status"] == "completed"


class TokenModule(BigtrainModule):
    """The module with a token-level loss, computed the way a language-model task does."""

    def training_step(self, batch, batch_idx):
        tokens, targets = batch
        loss, _ = self.token_mean.micro_batch_loss(self(tokens), targets)
        return loss


def test_token_level_accumulation_through_the_module_matches_one_batch():
    vocab = 11
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, vocab, (32, 6), generator=gen)
    targets = torch.randint(0, vocab, (32, 6), generator=gen)
    targets[:8, 1:] = -100  # uneven micro-batches: 8 real tokens in the first, 48 in the others

    def tiny() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Embedding(vocab, 8), torch.nn.Linear(8, vocab))

    reference = tiny()
    torch.nn.functional.cross_entropy(reference(tokens).flatten(0, 1), targets.flatten()).backward()
    expected = torch.cat([(p - 0.5 * p.grad).detach().flatten() for p in reference.parameters()])
    for acc in (1, 4):
        module = TokenModule(
            tiny(),
            task="multiclass",
            num_classes=vocab,
            optim=SGDConfig(
                name="sgd",
                lr=0.5,
                momentum=0.0,
                nesterov=False,
                weight_decay=0.0,
                no_decay=["bias", "norm", "embedding"],
                implementation="auto",
            ),
            sched=ConstantSchedConfig(
                name="constant", interval="step", warmup_steps=0, warmup_fraction=0.0, min_lr_ratio=0.0
            ),
            metric_names=["acc"],
            train_metrics=False,
        )
        loader = TensorLoader([tokens, targets], 32, shuffle=False, accumulation=acc, drop_last=True)
        trainer = pl.Trainer(
            accelerator="cpu",
            max_steps=1,
            accumulate_grad_batches=acc,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(module, train_dataloaders=loader)
        assert torch.allclose(_weights(module), expected, atol=1e-6), acc
