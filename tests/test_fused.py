"""trainer.steps_per_call: several optimizer steps per Lightning batch train exactly as one step
per batch does (same weights, same logged values at the same steps), resume across a change of
it, and refuse the settings they cannot honour with one line."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
import torch

import bigtrain
from bigtrain.callbacks.nan_policy import NonFiniteLossError
from bigtrain.config import AUTO_STEPS_PER_CALL, ConfigError, _fused_blockers, steps_per_call
from bigtrain.data.tensors import TensorLoader
from conftest import QUIET, make_cfg

BASE = [*QUIET, "callbacks.plots=false", "trainer.max_epochs=3"]


def _logged(run_dir: Path) -> list[dict[str, str]]:
    """metrics.csv as one row per step (a step's values may come in one call or several),
    without the timing columns, which differ between any two runs."""
    steps: dict[str, dict[str, str]] = {}
    with (run_dir / "metrics.csv").open() as f:
        for r in csv.DictReader(f):
            row = {k: v for k, v in r.items() if v and not k.startswith("perf/")}
            merged = steps.setdefault(row["step"], {})
            assert all(merged.get(k, v) == v for k, v in row.items())  # no value logged twice, differently
            merged.update(row)
    return list(steps.values())


def _train(tmp_path: Path, name: str, overrides: list[str]) -> tuple[dict, Path]:
    run_dir = tmp_path / name
    return bigtrain.train([*BASE, *overrides], run_dir=run_dir), run_dir


def _assert_identical(a: tuple[dict, Path], b: tuple[dict, Path]) -> None:
    (ra, da), (rb, db) = a, b
    wa = torch.load(da / "checkpoints" / "last.ckpt", weights_only=True)
    wb = torch.load(db / "checkpoints" / "last.ckpt", weights_only=True)
    for key in wa["state_dict"]:
        assert torch.equal(wa["state_dict"][key], wb["state_dict"][key]), key
    assert wa["lr_schedulers"] == wb["lr_schedulers"]
    assert ra["global_step"] == rb["global_step"] and ra["epochs"] == rb["epochs"]
    assert ra["val"] == rb["val"] and ra.get("test") == rb.get("test")
    assert _logged(da) == _logged(db)


@pytest.mark.parametrize(
    ("overrides", "steps"),
    [
        # The default run with dropout (the RNG order matters) and clipping by norm.
        (["model.dropout=0.2", "trainer.gradient_clip_val=0.5"], "auto"),
        # Binary task, clipping by value, label smoothing, 4 steps a batch: 19 steps an epoch
        # leave a short last batch.
        (
            [
                "data=breast_cancer",
                "trainer.gradient_clip_val=0.05",
                "trainer.gradient_clip_algorithm=value",
                "tricks.label_smoothing=0.1",
                "callbacks.checkpoint.monitor=train/loss",  # read from Lightning at epoch ends
                "callbacks.early_stopping.enabled=true",
                "callbacks.early_stopping.patience=1",
                "trainer.max_epochs=8",
            ],
            "4",
        ),
        # Stops at max_steps in the middle of a batch of steps and of an epoch.
        (["trainer.max_steps=30", "trainer.max_epochs=5", "optim=sgd"], "8"),
        # No epoch limit: the schedule spans max_steps.
        (["trainer.max_steps=45", "trainer.max_epochs=-1"], "auto"),
        # A language model on text windows (token loss and accuracy, dropout, the LR warm-up).
        (
            [
                "model=gpt/tiny",
                "model.dropout=0.1",
                "data=stdlib_text",
                "metrics=lm",
                "data.max_bytes=20000",
                "data.seq_len=32",
                "data.batch_size=8",
                "callbacks.samples.enabled=false",
                "trainer.max_epochs=1",
                "trainer.gradient_clip_val=1.0",
            ],
            "auto",
        ),
    ],
    ids=["default-auto", "binary-value-clip-4", "max-steps-sgd-8", "steps-only-auto", "gpt-text-auto"],
)
def test_fused_steps_train_exactly_as_one_step_per_batch(tmp_path, overrides, steps):
    one = _train(tmp_path, "one", [*overrides, "trainer.steps_per_call=1"])
    fused = _train(tmp_path, "fused", [*overrides, f"trainer.steps_per_call={steps}"])
    assert fused[0]["steps_per_call"] == (AUTO_STEPS_PER_CALL if steps == "auto" else int(steps))
    assert one[0]["steps_per_call"] == 1
    _assert_identical(one, fused)
    logged = _logged(fused[1])
    loss_steps = [int(r["step"]) for r in logged if "train/loss" in r]
    # Every log_every_n_steps (10), with the gradient norm beside the loss, and the rates.
    assert loss_steps == list(range(9, fused[0]["global_step"], 10))
    assert all("train/grad_norm" in r for r in logged if "train/loss" in r)
    assert [int(r["step"]) for r in logged if "lr/pg1" in r] == loss_steps
    assert fused[0]["throughput"]["samples_per_s"] > 0


def test_unfused_mid_epoch_checkpoint_resumes_fused(tmp_path):
    """A step checkpoint written one step per batch (position: 2 steps into epoch 1) continues
    with 32 steps per batch from the same sample, and ends where an uninterrupted run ends."""
    common = ["sched=constant", "trainer.max_epochs=3"]
    whole = _train(tmp_path, "whole", [*common, "trainer.steps_per_call=1"])
    first = _train(
        tmp_path,
        "first",
        [*common, "trainer.max_steps=22", "callbacks.checkpoint.every_n_train_steps=21"],
    )
    assert first[0]["steps_per_call"] == 1  # mid-epoch checkpoints keep one step per batch
    step_ckpt = first[1] / "checkpoints" / "step000021.ckpt"
    assert step_ckpt.is_file()
    resumed = _train(tmp_path, "resumed", [*common, f"ckpt_path={step_ckpt}"])
    assert resumed[0]["steps_per_call"] == AUTO_STEPS_PER_CALL
    wa = torch.load(whole[1] / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    wb = torch.load(resumed[1] / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    assert whole[0]["val"] == resumed[0]["val"] and whole[0]["test"] == resumed[0]["test"]
    assert resumed[0]["global_step"] == whole[0]["global_step"] == 57
    # And back: an epoch-end checkpoint of fused steps continues one step per batch.
    fused = _train(tmp_path, "fused", [*common, "trainer.max_epochs=2"])
    assert fused[0]["steps_per_call"] == AUTO_STEPS_PER_CALL
    last = fused[1] / "checkpoints" / "last.ckpt"
    back = _train(tmp_path, "back", [*common, f"ckpt_path={last}", "trainer.steps_per_call=1"])
    wc = torch.load(back[1] / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for key in wa:
        assert torch.equal(wa[key], wc[key]), key
    assert back[0]["global_step"] == 57 and back[0]["val"] == whole[0]["val"]


def test_loader_hands_out_steps_in_one_gather_and_resumes_in_micro_batches():
    x = torch.arange(80).float().unsqueeze(1)  # 10 micro-batches of 8 an epoch

    def loader(k: int) -> TensorLoader:
        return TensorLoader([x], 8, shuffle=True, seed=1, epoch=lambda: 4, drop_last=True, steps_per_batch=k)

    micro = [b[0].flatten().tolist() for b in loader(1)]
    fused = loader(4)
    assert len(fused) == 3 and fused.micro_batches_per_epoch == 10
    chunks = [b[0].flatten().tolist() for b in fused]
    assert [len(c) for c in chunks] == [32, 32, 16]
    assert sum(chunks, []) == sum(micro, [])
    fused.load_state_dict({"epoch": 4, "consumed": 5})  # positions count micro-batches
    assert sum((b[0].flatten().tolist() for b in fused), []) == sum(micro[5:], [])
    with pytest.raises(ValueError, match="one process without accumulation"):
        TensorLoader([x], 8, shuffle=True, drop_last=True, accumulation=2, steps_per_batch=4)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["trainer.accumulate_grad_batches=2"], "gradient accumulation: set trainer.steps_per_call=1"),
        (["tricks=ema"], "weight averaging"),
        (["trainer.devices=2", "strategy=ddp"], "more than one process"),
        (["callbacks.checkpoint.every_n_train_steps=5"], "mid-epoch checkpoints"),
        (["trainer.val_check_interval=0.5"], "validation within an epoch"),
        (["sched=plateau"], "sched=plateau"),
    ],
)
def test_what_rules_out_fused_steps(overrides, fragment):
    # auto quietly runs one step per batch; asking for more is a one-line error naming both fixes.
    assert steps_per_call(make_cfg(overrides)) == 1
    with pytest.raises(ConfigError, match=r"^trainer\.steps_per_call=4 cannot be used with") as info:
        make_cfg([*overrides, "trainer.steps_per_call=4"])
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_the_gradient_scaler_and_streamed_data_rule_out_fused_steps():
    # 16-mixed needs a GPU and data=tokens a token file to validate, so the rules are checked on
    # the config itself.
    cfg = make_cfg([])
    scaled = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, precision="16-mixed"))
    streamed = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, name="tokens"))
    assert not _fused_blockers(cfg)
    assert [what for what, _ in _fused_blockers(scaled)] == [
        "trainer.precision=16-mixed (its gradient scaler)"
    ]
    assert [what for what, _ in _fused_blockers(streamed)] == ["data=tokens"]


def test_tensorboard_events_hold_what_metrics_csv_holds(tmp_path):
    """Each logging call is one TensorBoard event with all its scalars; TensorBoard's own reader
    finds every value metrics.csv has, at the same steps."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    results, run_dir = _train(tmp_path, "tb", ["trainer.max_epochs=2"])
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    logged = _logged(run_dir)
    for key in ("train/loss", "train/grad_norm", "lr/pg1", "val/acc", "train/f1", "epoch"):
        assert key in tags, key
        csv_values = [(int(r["step"]), float(r[key])) for r in logged if key in r]
        tb_values = sorted({(e.step, e.value) for e in events.Scalars(key)})
        assert [s for s, _ in tb_values] == [s for s, _ in csv_values], key
        for (_, a), (_, b) in zip(tb_values, csv_values, strict=True):
            assert a == pytest.approx(b, rel=1e-6), key
    assert results["steps_per_call"] == AUTO_STEPS_PER_CALL


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_non_finite_losses_are_handled_as_with_one_step_per_batch(tmp_path, policy):
    """A learning rate that blows the weights up: both settings skip the same batches (counted as
    steps, as Lightning counts them), stop at the same step with the same message, and keep the
    same last finite weights."""
    overrides = [
        "optim=sgd",
        "optim.lr=1e6",
        f"tricks.nonfinite.policy={policy}",
        "tricks.nonfinite.max_consecutive=4",
    ]
    seen = {}
    for steps in ("1", "auto"):
        run_dir = tmp_path / steps
        with pytest.raises(NonFiniteLossError) as info:
            bigtrain.train([*BASE, *overrides, f"trainer.steps_per_call={steps}"], run_dir=run_dir)
        results = json.loads((run_dir / "results.json").read_text())
        weights = torch.load(run_dir / "checkpoints" / "last-finite.ckpt", weights_only=True)["state_dict"]
        seen[steps] = (str(info.value), results["nonfinite"], results["global_step"], weights)
    (message, nonfinite, step, weights), fused = seen["1"], seen["auto"]
    assert fused[:3] == (message, nonfinite, step)
    assert "optimizer step" in message and nonfinite["stopped_at_step"] == step
    assert (nonfinite["skipped"] == 4) == (policy == "skip")
    for key in weights:
        assert torch.equal(weights[key], fused[3][key]), key


def test_the_plan_says_how_many_steps_run_per_batch():
    from bigtrain.data import data_spec
    from bigtrain.plan import make_plan

    for overrides, expected in (([], AUTO_STEPS_PER_CALL), (["trainer.steps_per_call=1"], 1)):
        cfg = make_cfg(overrides)
        assert make_plan(cfg, data_spec(cfg))["batch"]["steps_per_call"] == expected
