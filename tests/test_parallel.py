"""Parallel strategies in one process: validation of each strategy's settings, the plan's memory
under each strategy, the tensor-parallel plans, activation checkpointing and compile switches.
The multi-process proofs are in test_parallel_distributed.py."""

from __future__ import annotations

import dataclasses
import types

import pytest
import torch

from bigtrain.config import ConfigError, tensor_parallel_size
from bigtrain.data import data_spec
from bigtrain.distributed.checks import check_parallel
from bigtrain.distributed.parallel import family_of, parallelize, tp_sharded_params
from bigtrain.models import build_model
from bigtrain.models.mlp import tp_plan as mlp_tp_plan
from bigtrain.runs.export import export
from bigtrain.runs.plan import make_plan
from conftest import make_cfg

CPU2 = ["trainer.accelerator=cpu", "trainer.devices=2"]


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (
            ["strategy=tp", "strategy.tensor_parallel_size=3", *CPU2],
            "set strategy.tensor_parallel_size to a divisor of 2",
        ),
        (["strategy=tp", "model=cnn/tiny", *CPU2], "no tensor-parallel plan for model family 'cnn'"),
        (["strategy=tp", "model.norm=layer", *CPU2], "set model.norm=none or use strategy=fsdp"),
        (["strategy=fsdp_tp", *CPU2], "needs at least 2 tensor-parallel groups"),
        (["strategy=fsdp", "strategy.sharding=hybrid", *CPU2], "set strategy.sharding=full"),
        (["strategy=deepspeed_zero2", *CPU2], "strategy=deepspeed_zero2 needs the deepspeed package"),
        (["strategy=deepspeed_zero3", *CPU2], "pip install 'bigtrain[deepspeed]'"),
        (["strategy=fsdp", "strategy.sharding=half", *CPU2], "strategy.sharding=half is not valid"),
        (["strategy=tp", "strategy.tensor_parallel_size=0", *CPU2], "is out of range"),
        (
            ["strategy=tp", "trainer.devices=4", "trainer.accelerator=cpu", "data.batch_size=63"],
            "devices x nodes / tensor_parallel_size 2 x accumulation = 4 x 1 / tensor_parallel_size 2 x 1 = 2",
        ),
    ],
)
def test_bad_strategy_settings_are_one_line_errors(overrides, fragment):
    with pytest.raises(ConfigError) as e:
        make_cfg(overrides)
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_transformer_norms_do_not_block_tensor_parallel():
    # The Transformer's norms act on the whole residual stream; only the MLP's split features.
    for preset in ("gpt/tiny", "llama/tiny"):
        cfg = make_cfg([f"model={preset}", "data=stdlib_text", "metrics=lm", "strategy=tp", *CPU2])
        assert cfg.model.norm != "none" and cfg.strategy.name == "tp"


def test_heads_must_divide_by_the_tensor_parallel_size():
    # The transformer family's record checks its heads against the tensor-parallel size.
    cfg = make_cfg(["strategy=tp", *CPU2])
    heads = types.SimpleNamespace(family="transformer", n_heads=6, n_kv_heads=3)
    (line,) = check_parallel(dataclasses.replace(cfg, model=heads))
    assert "model.n_kv_heads=3 is not divisible by strategy.tensor_parallel_size=2" in line
    even = types.SimpleNamespace(**{**vars(heads), "n_kv_heads": 2})
    assert list(check_parallel(dataclasses.replace(cfg, model=even))) == []


def test_sharded_checkpoint_directory_needs_a_sharding_strategy(tmp_path):
    (tmp_path / "last.ckpt").mkdir()
    torch.save({"global_step": 3, "epoch": 1}, tmp_path / "last.ckpt" / "meta.pt")
    with pytest.raises(ConfigError, match="add strategy=fsdp"):
        make_cfg([f"ckpt_path={tmp_path / 'last.ckpt'}"])
    assert make_cfg(["strategy=fsdp", *CPU2, f"ckpt_path={tmp_path / 'last.ckpt'}"]).ckpt_path


def test_data_parallel_size_excludes_tensor_parallel_groups():
    cfg = make_cfg(["strategy=fsdp_tp", "trainer.accelerator=cpu", "trainer.devices=4"])
    assert tensor_parallel_size(cfg.strategy) == 2
    assert cfg.data_parallel_size == 2 and cfg.micro_batch_size == cfg.data.batch_size // 2


def _memory(overrides):
    cfg = make_cfg(["model=mlp/tiny", *overrides])
    plan = make_plan(cfg, data_spec(cfg))
    b = plan["batch"]
    # micro-batch x data-parallel ranks x accumulation is the global batch under every strategy
    assert b["micro_batch_size"] * b["data_parallel_size"] == b["global_batch_size"]
    assert b["data_parallel_size"] * b["tensor_parallel_size"] == b["devices"] * b["num_nodes"]
    return plan["memory_per_device_bytes"]


def test_plan_memory_follows_the_strategy():
    single = _memory([])
    ddp = _memory(["strategy=ddp", *CPU2])
    fsdp = _memory(["strategy=fsdp", *CPU2])
    fsdp4 = _memory(["strategy=fsdp", "trainer.accelerator=cpu", "trainer.devices=4"])
    tp = _memory(["strategy=tp", *CPU2])
    fsdp_tp = _memory(["strategy=fsdp_tp", "trainer.accelerator=cpu", "trainer.devices=4"])
    states = ("weights", "gradients", "optimizer")
    for key in states:
        assert ddp[key] == single[key]  # replicated
        assert fsdp[key] == -(-single[key] // 2) and fsdp4[key] == -(-single[key] // 4)
        # mlp/tiny is Linear(64, 32) + head Linear(32, 10): one colwise/rowwise pair, all sharded.
        assert tp[key] == single[key] // 2
        assert fsdp_tp[key] == -(-(single[key] // 2) // 2)
    # Activations are per micro-batch: 64 samples on 1 device, 32 per device on 2 data-parallel ranks.
    assert single["activations"] // 2 <= ddp["activations"] < single["activations"]
    assert tp["activations"] == single["activations"]  # one data-parallel rank: the whole batch
    assert fsdp["total"] == sum(fsdp[k] for k in (*states, "activations"))


def test_mlp_tp_plan_pairs_linears_and_leaves_an_odd_last_one_replicated():
    spec = data_spec(make_cfg())
    three = build_model(
        make_cfg(["model.hidden=[16,8]", "model.dropout=0.0"]).model, spec.input_shape, spec.num_outputs
    )
    plan = mlp_tp_plan(three)
    assert {k: type(v).__name__ for k, v in plan.items()} == {
        "body.1": "ColwiseParallel",
        "body.3": "RowwiseParallel",
    }
    sharded = sum(p.numel() for n in ("body.1", "body.3") for p in three.get_submodule(n).parameters())
    assert tp_sharded_params(three) == sharded
    assert sharded < sum(p.numel() for p in three.parameters())  # the head stays whole


def _grads(model, x, y):
    torch.manual_seed(1)  # same dropout masks in both models; the wrapper replays them in backward
    model.zero_grad()
    out = model(x)
    torch.nn.functional.cross_entropy(out.flatten(0, -2), y.flatten()).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("mode", ["true", "selective", "every_n:2"])
@pytest.mark.parametrize("family", ["mlp/small", "cnn/tiny", "vit/tiny", "llama/tiny"])
def test_activation_checkpointing_keeps_gradients_and_state_dict_keys(family, mode):
    cfg = make_cfg([f"model={family}", f"strategy.activation_checkpointing={mode}"])
    spec = data_spec(cfg)
    torch.manual_seed(0)
    plain = build_model(cfg.model, spec.input_shape, spec.num_outputs)
    wrapped = build_model(cfg.model, spec.input_shape, spec.num_outputs)
    wrapped.load_state_dict(plain.state_dict())
    parallelize(wrapped, cfg.strategy)
    blocks = family_of(plain).blocks(plain)
    every = 2 if mode == "every_n:2" else 1
    kind = "Selective" if mode == "selective" else "Checkpointed"
    for i, name in enumerate(blocks):
        block, original = wrapped.get_submodule(name), type(plain.get_submodule(name))
        assert isinstance(block, original)  # FSDP and TP plans still see the block's own class
        assert (type(block).__name__ == kind + original.__name__) == (i % every == 0), name
    assert list(wrapped.state_dict()) == list(plain.state_dict())  # checkpoints stay portable
    assert family_of(wrapped).fsdp_units(wrapped) == family_of(plain).fsdp_units(plain)
    if spec.task == "lm":
        x = torch.randint(0, spec.num_outputs, (4, 16))
        y = torch.randint(0, spec.num_outputs, (4, 16))
    else:
        x, y = torch.randn(8, *spec.input_shape), torch.randint(0, 10, (8,))
    g0, g1 = _grads(plain, x, y), _grads(wrapped, x, y)
    for (n0, a), b in zip(g0.items(), g1.values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=n0)


@pytest.mark.parametrize("value", ["sometimes", "every_n:0", "every_n:x", 3])
def test_a_bad_activation_checkpointing_value_is_one_line(value):
    with pytest.raises(ConfigError, match="strategy.activation_checkpointing=.* is not valid: choose full"):
        make_cfg([f"strategy.activation_checkpointing={value}"])


def test_compile_switch_compiles_each_block_in_place():
    cfg = make_cfg(["strategy.compile=true"])
    spec = data_spec(cfg)
    model = build_model(cfg.model, spec.input_shape, spec.num_outputs)
    keys = list(model.state_dict())
    parallelize(model, cfg.strategy)
    assert model.body._compiled_call_impl is not None  # the block's calls go through dynamo
    assert list(model.state_dict()) == keys


def test_export_of_a_single_file_checkpoint_loads_into_the_model(run, tmp_path):
    results, run_dir = run(["model=mlp/tiny", "+debug=fast", "test_after_fit=false"])
    out = export(run_dir / "checkpoints" / "last.ckpt", tmp_path / "weights.pt")
    saved = torch.load(out, weights_only=True)
    cfg = make_cfg(["model=mlp/tiny"])
    spec = data_spec(cfg)
    model = build_model(cfg.model, spec.input_shape, spec.num_outputs)
    model.load_state_dict(saved["state_dict"])  # strict: every key, no prefix
    full = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    torch.testing.assert_close(model.head.weight, full["model.head.weight"], rtol=0, atol=0)
    assert saved["hyper_parameters"]["model"]["hidden"] == [32]
