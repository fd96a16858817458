"""Language models' plan: parameter counts of the largest presets, activation and peak memory
against what torch really holds, and the torch-free shape tables against the built model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from bigtrain.data import data_spec
from bigtrain.models import build_model
from bigtrain.models.transformer import Transformer, activation_bytes
from bigtrain.runs.plan import make_plan
from conftest import READ_ONLY, make_cfg
from test_lm import LM
from tiny_models import tiny_transformer


def test_plan_for_gpt3_175b_on_1024_devices_in_seconds():
    import time

    start = time.perf_counter()
    cfg = make_cfg(["model=gpt/175b", *LM, "model.vocab_size=50257", "trainer.devices=1024", "strategy=ddp",
                    "data.batch_size=1024", "data.seq_len=2048", "trainer.precision=bf16-mixed", "dry_run=true"])  # fmt: skip
    plan = make_plan(cfg, data_spec(cfg))
    assert time.perf_counter() - start < 20
    n = plan["params"]["total"]
    assert n == pytest.approx(175e9, rel=0.01)
    # 6N + 12 L d T, with N the matmul weights: all but the position table, biases and norms
    # (13 d per layer: 9 d of biases, 4 d of LayerNorm gains and shifts)
    n_matmul = n - 2048 * 12288 - 96 * 13 * 12288 - 2 * 12288
    assert plan["flops_per_token"] == 6 * n_matmul + 12 * 96 * 12288 * 2048
    mem = plan["memory_per_device_bytes"]
    assert mem["weights"] == 4 * n and mem["optimizer"] == 8 * n
    assert mem["activations_checkpointed"] < mem["activations"]
    assert plan["batch"]["micro_batch_size"] == 1 and plan["batch"]["seq_len"] == 2048


@pytest.mark.parametrize(
    "changes", [{}, {"mlp": "swiglu", "norm": "rmsnorm", "positions": "rope", "n_kv_heads": 2}]
)
def test_activation_formula_matches_what_autograd_saves(changes):
    """The plan's formula against the bytes autograd actually keeps in a real float32 forward."""
    cfg = tiny_transformer(d_model=64, n_layers=3, max_seq_len=64, **changes)
    model = Transformer(cfg, vocab_size=256).train()
    x = torch.randint(0, 256, (4, 64))
    saved, seen = 0, set()
    # Weights (and their transposed views that linear layers save) are not activations.
    # Views (q, k and v of wqkv's output) share one storage: each storage counts once.
    weights = {p.untyped_storage().data_ptr() for p in [*model.parameters(), *model.buffers()]}

    def pack(t):
        nonlocal saved
        key = t.untyped_storage().data_ptr()
        if key not in weights and key not in seen:
            seen.add(key)
            saved += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.cross_entropy(model(x).flatten(0, 1), x.flatten())
    predicted = activation_bytes(model, 4, 64, "32-true", checkpointed=False)
    assert predicted == pytest.approx(saved, rel=0.02)


def _live_tensor_peak(cfg, steps: int = 3) -> int:
    """Peak bytes of live tensors (weights, gradients, AdamW state, activations and every
    intermediate) over `steps` float32 training steps in Lightning's order: forward and loss,
    zero_grad (skipped between the micro-batches of an accumulated step), backward, step. Each
    op's outputs are counted while its inputs are still alive."""
    from torch.multiprocessing.reductions import StorageWeakRef
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    from bigtrain.config import checkpointing
    from bigtrain.distributed.parallel import apply_activation_checkpointing
    from bigtrain.training.optim import build_optimizer

    class Live(TorchDispatchMode):
        def __init__(self, tensors):
            super().__init__()
            self.refs, self.peak = {}, 0
            for t in tensors:
                self.track(t)

        def track(self, t):
            # By address; a storage freed since the last sweep may have left its address to this one.
            storage = t.untyped_storage()
            known = self.refs.get(storage.data_ptr())
            if known is None or known[0].expired():
                self.refs[storage.data_ptr()] = (StorageWeakRef(storage), storage.nbytes())

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr():
                    self.track(t)
            self.refs = {k: v for k, v in self.refs.items() if not v[0].expired()}
            self.peak = max(self.peak, sum(n for _, n in self.refs.values()))
            return out

    spec = data_spec(cfg)
    model = build_model(cfg.model, spec.input_shape, spec.num_outputs).train()
    if checkpointing(cfg.strategy).on:
        apply_activation_checkpointing(model, checkpointing(cfg.strategy))
    opt = build_optimizer(cfg.optim, model)
    accumulate = cfg.trainer.accumulate_grad_batches
    x = torch.randint(0, spec.vocab_size, (cfg.micro_batch_size, spec.seq_len + 1))
    with Live(model.parameters()) as live:
        for i in range(steps * accumulate):
            loss = F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
            if i % accumulate == 0:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            if i % accumulate == accumulate - 1:
                opt.step()
    return live.peak


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=gpt/tiny", "model.vocab_size=4096"],  # the loss's transients dominate
        [
            "model=gpt/tiny",
            "model.vocab_size=4096",
            "trainer.accumulate_grad_batches=2",
            "data.batch_size=16",
        ],
        ["model=llama/tiny", "strategy.activation_checkpointing=true", "data.seq_len=64"],
        [
            "model=llama/tiny",
            "model.n_layers=1",
            "model.d_ff=1024",
            "strategy.activation_checkpointing=true",
            "data.seq_len=64",
            "data.batch_size=16",
        ],  # a block's backward is the peak
        # selective: each block keeps wqkv's, w1's and w2's outputs and attention's
        ["model=llama3/tiny", "strategy.activation_checkpointing=selective", "data.seq_len=64"],
        ["model=gpt/tiny", "strategy.activation_checkpointing=selective", "data.seq_len=64"],
        [
            "model=llama/tiny",
            "model.n_layers=4",
            "strategy.activation_checkpointing=every_n:2",
            "data.seq_len=64",
        ],
    ],  # fmt: skip
)
def test_plan_total_matches_the_peak_of_live_tensors(overrides):
    """The plan's total (weights, gradients, AdamW state, activations and the transients of the
    loss and the backward) against the largest sum of live tensors in real training steps."""
    cfg = make_cfg([*LM, "optim=adamw", "trainer.precision=32-true", *overrides])
    plan = make_plan(cfg, data_spec(cfg))["memory_per_device_bytes"]
    peak = _live_tensor_peak(cfg)
    assert plan["total"] == pytest.approx(peak, rel=0.05)
    from bigtrain.config import checkpointing

    if not checkpointing(cfg.strategy).on:
        assert plan["transient"] > 0.1 * plan["total"]  # what the test is about


SHAPE_CASES = [
    *[[f"model=gpt/{size}"] for size in ("tiny", "125m", "350m", "1.3b", "13b", "175b")],
    *[[f"model=llama/{size}"] for size in ("tiny", "7b", "70b")],
    ["model=gpt/tiny", "model.tie_embeddings=false", "model.bias=false", "model.dropout=0.1"],
    ["model=gpt/tiny", "model.positions=rope", "model.mlp=swiglu", "model.norm=rmsnorm"],
    ["model=llama/tiny", "model.n_kv_heads=2", "model.tie_embeddings=true", "model.bias=true"],
    ["model=llama/tiny", "model.norm=layernorm", "model.bias=true", "model.vocab_size=300"],
]


@pytest.mark.parametrize("overrides", SHAPE_CASES, ids=lambda o: " ".join(o))
def test_shapes_without_torch_match_the_built_model(overrides):
    """models/shapes.py (the dry run's torch-free plan) against the meta-built Transformer:
    names and shapes, weight-decay kinds, matmul weights, the tensor-parallel split and the
    optimizer group audit under adamw, sgd and muon."""
    from bigtrain.distributed.parallel import tp_sharded_params
    from bigtrain.models import build_meta_model, model_vocab, shapes
    from bigtrain.models.transformer import matmul_params
    from bigtrain.training.optim import _named_trainable, group_audit, optimizer_groups, param_kind

    cfg = make_cfg([*LM, *overrides, *READ_ONLY])
    spec = data_spec(cfg)
    model = build_meta_model(cfg.model, spec.input_shape, spec.num_outputs)
    rows = shapes.transformer_params(cfg.model, model_vocab(cfg.model, spec.num_outputs))
    assert [(r.name, r.shape) for r in rows] == [(n, tuple(p.shape)) for n, p in model.named_parameters()]
    assert [r.kind for r in rows] == [param_kind(m, n, p) for m, n, p in _named_trainable(model)]
    assert shapes.matmul_params(cfg.model, model.vocab_size) == matmul_params(model)
    assert sum(r.numel for r in rows if r.tp_split) == tp_sharded_params(model)
    for optim in ("adamw", "sgd", "muon"):
        ocfg = make_cfg([*LM, *overrides, f"optim={optim}", *READ_ONLY]).optim
        assert shapes.group_audit_rows(ocfg, rows) == group_audit(optimizer_groups(ocfg, model)), optim


def test_dry_run_of_a_transformer_never_imports_torch(tmp_path):
    probe = "import sys\nfrom bigtrain.cli import main\nmain(sys.argv[1:])\nprint('TORCH', 'torch' in sys.modules)\n"
    out = subprocess.run(
        [sys.executable, "-c", probe, *LM, "model=llama/7b", "dry_run=true", "hydra.run.dir=plan"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "TORCH False" in out.stdout
    plan = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert plan["params"]["total"] == 6_738_415_616  # LLaMA-2 7B as released
