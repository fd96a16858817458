"""Optimizers, parameter groups, schedules, label smoothing and the token mean: each checked
against its formula on small tensors (no training run)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bigtrain.build import build_module
from bigtrain.config import ConfigError, MLPConfig
from bigtrain.data import data_spec
from bigtrain.models import build_model
from bigtrain.runs.plan import make_plan
from bigtrain.training.accumulation import StepTokenMean
from bigtrain.training.optim import build_optimizer, build_scheduler, lr_multiplier, param_groups
from conftest import make_cfg


def _lrs(overrides: list[str], total: int, steps: int) -> list[float]:
    """The learning rate the real scheduler sets at each of `steps` optimizer steps."""
    cfg = make_cfg(overrides)
    opt = build_optimizer(cfg.optim, nn.Linear(2, 2))
    sched = build_scheduler(cfg.sched, opt, total)["scheduler"]
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_linear_schedule_matches_the_formula():
    lrs = _lrs(
        ["optim=sgd", "optim.lr=1.0", "sched=linear", "sched.warmup_steps=4", "sched.min_lr_ratio=0.1"],
        24,
        25,
    )
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    # after warmup: 0.1 + 0.9 * (1 - (s - 4) / 20)
    for s in (4, 9, 14, 23, 24):
        assert lrs[s] == pytest.approx(0.1 + 0.9 * (1 - (s - 4) / 20)), s


def test_warmup_stable_decay_holds_then_decays():
    base = ["optim=sgd", "optim.lr=1.0", "sched=wsd", "sched.warmup_steps=10", "sched.decay_fraction=0.2"]
    lrs = _lrs([*base, "sched.decay_shape=sqrt"], 100, 101)
    assert lrs[9] == pytest.approx(1.0) and lrs[50] == lrs[80] == pytest.approx(1.0)  # stable until 80
    assert lrs[90] == pytest.approx(1 - math.sqrt(0.5)) and lrs[100] == pytest.approx(0.0)
    lin = _lrs([*base, "sched.decay_shape=linear", "sched.min_lr_ratio=0.2"], 100, 101)
    assert lin[90] == pytest.approx(0.2 + 0.8 * 0.5) and lin[100] == pytest.approx(0.2)


def test_step_and_exponential_schedules():
    step = _lrs(["optim=sgd", "optim.lr=1.0", "sched=step", "sched.step_size=5", "sched.gamma=0.5"], 100, 16)
    assert step == pytest.approx([1.0] * 5 + [0.5] * 5 + [0.25] * 5 + [0.125])
    exp = _lrs(
        ["optim=sgd", "optim.lr=1.0", "sched=exponential", "sched.gamma=0.9", "sched.min_lr_ratio=0.5"],
        100,
        10,
    )
    assert exp == pytest.approx([max(0.5, 0.9**s) for s in range(10)])


def test_epoch_interval_counts_epochs():
    cfg = make_cfg(["sched=cosine", "sched.interval=epoch", "sched.warmup_fraction=0"]).sched
    f = lr_multiplier(cfg, total_steps=10)
    assert f(5) == pytest.approx(0.5)  # half of 10 epochs: cos(pi/2)


def test_plateau_drops_after_patience_and_stops_at_the_floor():
    cfg = make_cfg(
        [
            "optim=sgd",
            "optim.lr=1.0",
            "sched=plateau",
            "sched.patience=1",
            "sched.factor=0.5",
            "sched.min_lr_ratio=0.3",
        ]
    )
    opt = build_optimizer(cfg.optim, nn.Linear(2, 2))
    conf = build_scheduler(cfg.sched, opt, 100)
    assert conf["interval"] == "epoch" and conf["monitor"] == "val/loss"
    lrs = []
    for val_loss in (1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9):  # improves once, then flat
        conf["scheduler"].step(val_loss)
        lrs.append(opt.param_groups[0]["lr"])
    # 2 runs without improvement > patience 1 -> halve; floor 0.3
    assert lrs == pytest.approx([1.0, 1.0, 1.0, 0.5, 0.5, 0.3, 0.3])


def _norm_model() -> nn.Module:
    return nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 3))


@pytest.mark.parametrize("no_decay", [["bias", "norm", "embedding"], ["bias"], []])
def test_decay_touches_only_the_decayed_group(no_decay):
    """AdamW with zero gradients moves nothing but decay: w <- w (1 - lr wd) in the decay group."""
    model = _norm_model()
    cfg = make_cfg(
        ["optim=adamw", "optim.lr=0.5", "optim.weight_decay=0.2", f"optim.no_decay=[{','.join(no_decay)}]"]
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(cfg.optim, model)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    kinds = {
        "0.weight": "embedding",
        "1.weight": "weight",
        "1.bias": "bias",
        "2.weight": "norm",
        "2.bias": "bias",
    }
    kinds |= {"3.weight": "weight", "3.bias": "bias"}
    for n, p in model.named_parameters():
        decayed = kinds[n] == "weight" or kinds[n] not in no_decay
        expected = before[n] * (1 - 0.5 * 0.2) if decayed else before[n]
        assert torch.allclose(p, expected, atol=1e-7), n


def test_plan_audits_the_groups():
    cfg = make_cfg(["model=mlp/small", "model.norm=layer"])
    plan = make_plan(cfg, data_spec(cfg))
    rows = {r["group"]: r for r in plan["optimizer_groups"]}
    model = build_model(cfg.model, (64,), 10)
    matrices = [p for p in model.parameters() if p.ndim == 2]
    assert rows["decay"]["tensors"] == len(matrices) and rows["decay"]["params"] == sum(
        p.numel() for p in matrices
    )
    assert rows["decay"]["params"] + rows["no_decay"]["params"] == plan["params"]["trainable"]
    assert rows["no_decay"]["weight_decay"] == 0.0


def test_muon_orthogonalises_matrices_and_falls_back_for_the_rest():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.LayerNorm(32), nn.Linear(32, 8))
    cfg = make_cfg(["optim=muon", "optim.weight_decay=0", "optim.adjust_lr=original"]).optim
    opt = build_optimizer(cfg, model)
    kinds = {g["group"]: g for g in opt.param_groups}
    assert set(kinds) == {"muon", "adamw_no_decay"}
    assert all(p.ndim == 2 for p in kinds["muon"]["params"]) and len(kinds["muon"]["params"]) == 2
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(64, 16)).square().mean().backward()
    opt.step()
    w0 = model[0].weight
    # Muon's update of a 32x16 matrix is lr * sqrt(32/16) * O with O nearly orthogonal: its
    # singular values are near 1 (Newton-Schulz with 5 steps lands them in about [0.7, 1.2]).
    o = (before[0] - w0.detach()) / (cfg.lr * math.sqrt(32 / 16))
    s = torch.linalg.svdvals(o)
    assert s.min() > 0.5 and s.max() < 1.5
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    state = opt.state_dict()
    again = build_optimizer(cfg, model)
    again.load_state_dict(state)
    assert again.optimizers[0].state_dict()["state"].keys() == opt.optimizers[0].state_dict()["state"].keys()


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_foreach_and_fused_implementations_give_the_same_step(name):
    results = []
    for impl in ("for_loop", "foreach", "fused"):
        torch.manual_seed(0)
        model = _norm_model()
        opt = build_optimizer(make_cfg([f"optim={name}", f"optim.implementation={impl}"]).optim, model)
        assert opt.defaults.get("fused") is (True if impl == "fused" else None)
        for _ in range(3):
            opt.zero_grad()
            model(torch.arange(10).view(5, 2)).sum().backward()
            opt.step()
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(results[0], results[1], atol=1e-6) and torch.allclose(
        results[0], results[2], atol=1e-5
    )


def test_auto_takes_the_fused_kernel_only_where_torch_has_one():
    model = _norm_model()
    cfg = make_cfg(["optim=adamw"]).optim
    assert build_optimizer(cfg, model).defaults["fused"] is True  # plain float32 CPU tensors
    assert not build_optimizer(cfg, model, scaled=True).defaults.get("fused")  # 16-mixed: scaler
    model.double()
    assert build_optimizer(cfg, model).defaults["fused"] is True
    assert not build_optimizer(cfg, torch.nn.Linear(2, 2).to(torch.float16).to("meta")).defaults.get("fused")
    muon = build_optimizer(make_cfg(["optim=muon"]).optim, model)
    assert muon.optimizers[-1].defaults["fused"] is True  # the fallback's Adam on non-matrices


def test_label_smoothing_changes_the_loss_by_the_formula():
    cfg = make_cfg(["tricks.label_smoothing=0.1"])
    module = build_module(cfg, data_spec(cfg))
    torch.manual_seed(0)
    logits, y = torch.randn(16, 10), torch.randint(0, 10, (16,))
    module.train()
    smoothed, _ = module.loss_and_probs(logits, y)
    logp = torch.log_softmax(logits, -1)
    nll = -logp.gather(1, y[:, None]).mean()
    uniform = -logp.mean()  # cross-entropy against the uniform distribution over 10 classes
    assert smoothed == pytest.approx(float(0.9 * nll + 0.1 * uniform), rel=1e-6)
    module.eval()  # evaluation losses are not smoothed
    assert module.loss_and_probs(logits, y)[0] == pytest.approx(float(nll), rel=1e-6)


def test_label_smoothing_for_binary_targets():
    cfg = make_cfg(["data=breast_cancer", "tricks.label_smoothing=0.2"])
    module = build_module(cfg, data_spec(cfg)).train()
    logits, y = torch.tensor([[2.0], [-1.0]]), torch.tensor([1, 0])
    p = torch.sigmoid(logits.squeeze(-1))
    target = torch.tensor([0.9, 0.1])  # 1 -> 1 - 0.2/2, 0 -> 0.2/2
    expected = -(target * p.log() + (1 - target) * (1 - p).log()).mean()
    assert module.loss_and_probs(logits, y)[0] == pytest.approx(float(expected), rel=1e-6)


def test_token_mean_of_uneven_micro_batches_equals_the_global_mean():
    """Padding makes micro-batches hold different numbers of tokens; the mean of their means is
    then wrong, while StepTokenMean's rescaled sum equals the mean over all tokens."""
    torch.manual_seed(0)
    vocab, batch, length = 11, 32, 6
    model = nn.Sequential(nn.Embedding(vocab, 8), nn.Linear(8, vocab))
    tokens = torch.randint(0, vocab, (batch, length))
    targets = torch.randint(0, vocab, (batch, length))
    targets[:8, 1:] = -100  # the first micro-batch has 8 real tokens, the others 48 each

    def grads() -> torch.Tensor:
        out = torch.cat([p.grad.flatten() for p in model.parameters()])
        model.zero_grad()
        return out

    nn.functional.cross_entropy(model(tokens).flatten(0, 1), targets.flatten()).backward()
    reference = grads()
    tm = StepTokenMean()
    for mb in range(4):  # what Lightning does with accumulate_grad_batches=4: loss / 4 each
        sl = slice(mb * 8, (mb + 1) * 8)
        loss, _ = tm.micro_batch_loss(model(tokens[sl]), targets[sl])
        (loss / 4).backward()
    tm.normalize_grads(model.parameters(), accumulation=4, world_size=1)
    assert torch.allclose(grads(), reference, atol=1e-6) and not tm.pending
    for mb in range(4):  # the naive way, to show the check can fail
        sl = slice(mb * 8, (mb + 1) * 8)
        logits = model(tokens[sl]).flatten(0, 1)
        (nn.functional.cross_entropy(logits, targets[sl].flatten()) / 4).backward()
    assert not torch.allclose(grads(), reference, atol=1e-3)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (
            ["sched=plateau", "sched.monitor=val/acc_"],
            "sched.monitor=val/acc_ is never logged (did you mean val/acc?)",
        ),
        (["sched=plateau", "sched.warmup_steps=5"], "sched=plateau has no warmup"),
        (["sched.interval=epoch", "trainer.max_epochs=-1", "trainer.max_steps=10"], "set trainer.max_epochs"),
        (["optim=muon", "optim.implementation=fused"], "optim=muon has no fused kernel"),
        (["tricks.ema.enabled=true", "tricks.swa.enabled=true"], "enable only one of them"),
        (
            ["tricks.swa.enabled=true", "tricks.swa.epoch_start=50", "trainer.max_epochs=5"],
            "after the last epoch",
        ),
        (
            ["tricks.nonfinite.policy=skip", "trainer.devices=2", "strategy=ddp", "trainer.accelerator=cpu"],
            "policy=stop",
        ),
        (
            [
                "tricks.finders.lr.enabled=true",
                "trainer.devices=2",
                "strategy=ddp",
                "trainer.accelerator=cpu",
            ],
            "trainer.devices=1",
        ),
        (["tricks.finders.lr.min_lr=1", "tricks.finders.lr.max_lr=0.1"], "must be below max_lr"),
        (["tricks.label_smoothing=1.5"], "tricks.label_smoothing=1.5 is out of range"),
        (["tricks.nonfinite.policy=ignore"], "choose one of stop, skip"),
        (["optim.no_decay=[bias,gain]"], "optim.no_decay[1]=gain is not valid"),
    ],
)
def test_bad_trick_settings_are_one_line_errors(overrides, fragment):
    with pytest.raises(ConfigError) as e:
        make_cfg(overrides)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_param_groups_keep_their_two_group_shape():
    model = build_model(
        MLPConfig(family="mlp", hidden=[8], activation="relu", dropout=0.0, norm="none"), (4,), 3
    )
    assert [g["group"] for g in param_groups(model, 0.1)] == ["decay", "no_decay"]
