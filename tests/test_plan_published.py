"""The dry-run plan against published large runs, and the Llama 3 presets against their sizes.

Published memory: torchtitan's docs/performance.md (Llama 3.1 8B, FSDP2 on H100s, bf16
parameters with fp32 gradient reduction, selective op activation checkpointing, local batch 2 x
8192 tokens; `max_reserved` per GPU): 82.4 GiB on 8 GPUs, 67.0 GiB on 128 GPUs. The plan's
`reserved` (runs/plan.reserved_bytes) must come within 10% of each, and its drop from 8 to 128
GPUs within 10% of the published 15.4 GiB.
Published sizes: Llama 3 8B has 8,030,261,248 parameters and 70B 70,553,706,496 (the released
checkpoints' counts, as Hugging Face's model cards and torchtitan report them).
"""

from __future__ import annotations

import pytest

from bigtrain.data import data_spec
from bigtrain.runs.plan import make_plan
from conftest import READ_ONLY, make_cfg
from test_lm import LM

GIB = 2**30
TORCHTITAN_8B = {8: 82.4, 128: 67.0}  # GiB max_reserved per GPU, torchtitan docs/performance.md


def _plan(devices: int, *extra: str) -> dict:
    cfg = make_cfg([
        *LM, "model=llama3/8b", "model.vocab_size=128256", "strategy=fsdp", f"trainer.devices={devices}",
        "data.seq_len=8192", f"data.batch_size={2 * devices}", "trainer.precision=bf16-mixed",
        "strategy.activation_checkpointing=selective", "trainer.accelerator=cpu", "dry_run=true",
        *extra, *READ_ONLY,
    ])  # fmt: skip
    return make_plan(cfg, data_spec(cfg))


@pytest.mark.parametrize("devices", sorted(TORCHTITAN_8B))
def test_plan_of_llama3_8b_on_fsdp_is_within_10_percent_of_the_published_reserved_memory(devices):
    plan = _plan(devices)
    mem = plan["memory_per_device_bytes"]
    assert plan["batch"]["micro_batch_size"] == 2 and plan["batch"]["seq_len"] == 8192
    assert mem["reserved"] / GIB == pytest.approx(TORCHTITAN_8B[devices], rel=0.10)
    # What makes it: 16 bytes of state per parameter sharded over the devices, activations of
    # selective checkpointing (about 2 MB per token for 32 blocks in bf16), the loss's float32
    # logits, and FSDP's gathered bf16 weights.
    n = plan["params"]["total"]
    states = mem["weights"] + mem["gradients"] + mem["optimizer"]
    assert states == pytest.approx(16 * n / devices, rel=1e-6)
    assert mem["fsdp_buffers"] > 0 and mem["activations"] > 0


def test_the_drop_from_8_to_128_gpus_is_within_10_percent_of_the_published_one():
    drop = (
        _plan(8)["memory_per_device_bytes"]["reserved"] - _plan(128)["memory_per_device_bytes"]["reserved"]
    ) / GIB
    assert drop == pytest.approx(TORCHTITAN_8B[8] - TORCHTITAN_8B[128], rel=0.10)


def test_bf16_gathered_weights_halve_what_the_plan_books_for_fsdp_and_drop_autocast_copies():
    mixed = _plan(8)["memory_per_device_bytes"]
    fp32 = _plan(8, "strategy.param_dtype=float32")["memory_per_device_bytes"]
    # fp32 gathers: autocast's bf16 copy of every matmul weight is kept for the backward, and
    # the residual stream stays in float32
    assert fp32["activations"] > mixed["activations"] + 14 * GIB
    assert fp32["fsdp_buffers"] > 1.5 * mixed["fsdp_buffers"]


def test_selective_checkpointing_sits_between_full_and_none():
    act = {
        mode: _plan(8, f"strategy.activation_checkpointing={mode}")["memory_per_device_bytes"]["activations"]
        for mode in ("true", "selective", "every_n:2", "false")
    }
    assert act["true"] < act["selective"] < act["false"]
    assert act["true"] < act["every_n:2"] < act["false"]


@pytest.mark.parametrize(("size", "published"), [("8b", 8_030_261_248), ("70b", 70_553_706_496)])
def test_llama3_presets_have_the_published_parameter_counts_on_the_meta_device(size, published):
    from bigtrain.models import build_meta_model

    cfg = make_cfg([*LM, f"model=llama3/{size}", "model.vocab_size=128256", *READ_ONLY])
    spec = data_spec(cfg)
    model = build_meta_model(cfg.model, spec.input_shape, spec.num_outputs)
    assert sum(p.numel() for p in model.parameters()) == published
    assert cfg.model.n_kv_heads == 8 and cfg.model.rope_theta == 500000.0 and cfg.model.vocab_size == 128256
    assert make_plan(cfg, spec)["params"]["total"] == published  # the torch-free count agrees
