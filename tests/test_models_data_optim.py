"""Models, data splits and sharding, parameter groups and schedules: unit checks of each part."""

from __future__ import annotations

import math

import pytest
import torch

from bigtrain.config import CNNConfig, MLPConfig
from bigtrain.data.sklearn import SklearnDataModule
from bigtrain.data.tensors import TensorLoader
from bigtrain.models import build_model
from bigtrain.training.optim import lr_multiplier, param_groups
from conftest import make_cfg


def test_seed_mlp_has_the_published_layer_widths():
    model = build_model(
        MLPConfig(
            family="mlp", hidden=[256, 128, 64, 32, 16, 8], activation="relu", dropout=0.0, norm="none"
        ),
        (30,),
        1,
    )
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [256, 128, 64, 32, 16, 8, 1]
    # 30*256+256 + 256*128+128 + 128*64+64 + 64*32+32 + 32*16+16 + 16*8+8 + 8*1+1
    assert sum(p.numel() for p in model.parameters()) == 51_841


def test_cnn_shapes_and_too_many_pooling_blocks():
    model = build_model(
        CNNConfig(family="cnn", channels=[8, 16], hidden=32, dropout=0.0, pooled_size=4), (1, 8, 8), 10
    )
    assert model(torch.zeros(4, 1, 8, 8)).shape == (4, 10)
    with pytest.raises(ValueError, match="fewer model.channels"):
        build_model(
            CNNConfig(family="cnn", channels=[4, 4, 4, 4], hidden=8, dropout=0.0, pooled_size=4),
            (1, 8, 8),
            10,
        )


def _module(overrides=()):
    cfg = make_cfg(list(overrides))
    dm = SklearnDataModule(cfg.data, seed=cfg.seed)
    dm.setup()
    return dm


def test_splits_are_stratified_disjoint_and_fixed_by_seed():
    a, b, c = _module(), _module(), _module(["seed=7"])
    assert a.sizes() == {"train": 1257, "val": 270, "test": 270}
    assert torch.equal(a.splits["test"][0], b.splits["test"][0])
    assert not torch.equal(a.splits["test"][0], c.splits["test"][0])
    counts = a.class_balance()["test"]
    assert max(counts) - min(counts) <= 2  # stratified


def test_standardisation_uses_training_statistics_only():
    dm = _module(["data=breast_cancer"])
    x_train, x_val = dm.splits["train"][0], dm.splits["val"][0]
    assert torch.allclose(x_train.mean(0), torch.zeros(30), atol=1e-4)
    assert torch.allclose(x_train.std(0, unbiased=False), torch.ones(30), atol=1e-3)
    assert not torch.allclose(x_val.mean(0), torch.zeros(30), atol=1e-3)  # val is not re-centred


def test_sharded_micro_batches_make_up_the_global_batch():
    x = torch.arange(100)
    single = list(TensorLoader([x], 16, shuffle=True, seed=3, drop_last=True))
    shards = [
        list(
            TensorLoader([x], 16, shuffle=True, seed=3, rank=r, world_size=2, accumulation=2, drop_last=True)
        )
        for r in range(2)
    ]
    assert len(single) == 6 and all(len(s) == 12 for s in shards)
    for step, (batch,) in enumerate(single):
        parts = [shards[r][step * 2 + a][0] for r in range(2) for a in range(2)]
        assert all(len(p) == 4 for p in parts)
        assert sorted(torch.cat(parts).tolist()) == sorted(batch.tolist())


def test_evaluation_shards_cover_every_sample_once():
    x = torch.arange(37)
    seen = [
        int(v)
        for r in range(3)
        for (b,) in TensorLoader([x], 5, shuffle=False, rank=r, world_size=3)
        for v in b
    ]
    assert sorted(seen) == list(range(37))


def test_epochs_reshuffle_deterministically():
    x = torch.arange(50)
    epoch = {"e": 0}
    loader = TensorLoader([x], 10, shuffle=True, seed=1, epoch=lambda: epoch["e"], drop_last=True)
    first = torch.cat([b for (b,) in loader])
    again = torch.cat([b for (b,) in loader])
    epoch["e"] = 1
    second = torch.cat([b for (b,) in loader])
    assert torch.equal(first, again) and not torch.equal(first, second)


def test_no_weight_decay_on_biases_and_norms():
    model = build_model(
        MLPConfig(family="mlp", hidden=[16, 8], activation="relu", dropout=0.0, norm="layer"), (4,), 3
    )
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decay["params"])
    norm_ids = {id(p) for m in model.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters()}
    assert norm_ids <= {id(p) for p in no_decay["params"]}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_cosine_schedule_follows_the_formula():
    cfg = make_cfg(["sched=cosine", "sched.warmup_steps=10", "sched.min_lr_ratio=0.1"]).sched
    f = lr_multiplier(cfg, total_steps=110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(110) == pytest.approx(0.1)


def test_constant_schedule_with_warmup():
    cfg = make_cfg(["sched=constant", "sched.warmup_steps=4"]).sched
    f = lr_multiplier(cfg, total_steps=100)
    assert [f(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
