"""The plan: what a run will cost, computed on the meta device before anything is allocated.

Parameters come from building the model on the meta device. FLOPs per sample come from
torch's FlopCounterMode over one meta forward pass (training = forward + backward = 3x forward,
since the backward computes gradients for both inputs and weights). Activation memory is the
sum of the tensors autograd saves for the backward in that same meta forward pass, scaled to the
micro-batch. Nothing here touches real memory, so it works for any size on any laptop.
A model of your own (`_target_`, docs/extending.md) is planned the same way; one that cannot be
built on the meta device is built on the CPU to be counted, and where its forward pass cannot
run on meta tensors its FLOPs are null ("unknown"). A data module of your own batches per
process: the micro-batch is its loaders' batch.

The transformer is costed analytically instead, from its config alone and without importing
torch (models/shapes.py, docs/lm.md): its parameters, FLOPs per token 6N + 12 L d T, activations
from the tensors each block keeps for the backward, with and without activation checkpointing,
and the transient memory of the step's peak moment (the logits and their gradients around the
loss, gradients of activations in a block's backward, the last step's gradients that Lightning
frees only after the forward).

plan.json keys are stable (add, never rename): params.total, params.trainable, flops_per_sample,
flops_per_token, memory_per_device_bytes.{weights,gradients,optimizer,activations,total}, batch.*;
for the transformer also params.embedding, batch.{seq_len,tokens_per_step} and
memory_per_device_bytes.{transient,activations_checkpointed,transient_checkpointed,total_checkpointed},
and under fsdp/fsdp_tp memory_per_device_bytes.fsdp_buffers; memory_per_device_bytes.reserved
for every model (reserved_bytes). `activations` follow strategy.activation_checkpointing (full,
selective, every_n:K or none); `*_checkpointed` are always full checkpointing, the fix offered
when a run does not fit.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bigtrain.models import build_meta_model, family, model_vocab
from bigtrain.models import shapes as tf
from bigtrain.runs.results import echo

if TYPE_CHECKING:
    import torch

# Bytes per parameter for weights and for the autocast compute dtype, by Lightning precision.
PARAM_BYTES = {"32-true": 4, "32": 4, "64-true": 8, "bf16-mixed": 4, "16-mixed": 4, "bf16-true": 2}
ACT_BYTES = {"32-true": 4, "32": 4, "64-true": 8, "bf16-mixed": 2, "16-mixed": 2, "bf16-true": 2}
# Optimizer state per parameter: Adam keeps two moments, SGD with momentum one buffer; states are
# kept in the parameters' dtype.
OPTIM_STATES = {"adam": 2, "adamw": 2, "sgd": 1}
# Reserved over allocated bytes of a step's working memory on a GPU (the caching allocator's
# rounding and fragmentation): an assumption of the plan, held against published runs
# (tests/test_plan_published.py).
ALLOCATOR_RESERVE = 1.10


def _meta_forward(model: torch.nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """(forward FLOPs, bytes saved for backward) of one forward pass on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    saved = 0
    seen: set[int] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        if isinstance(t, torch.nn.Parameter) or id(t) in seen:
            return t
        seen.add(id(t))
        saved += t.numel() * t.element_size()
        return t

    counter = FlopCounterMode(display=False)
    with counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(example)
    return int(counter.get_total_flops()), saved


def activation_precision(cfg: Any, precision: str) -> str:
    """The precision the blocks' tensors follow: under FSDP's MixedPrecisionPolicy with 16-bit
    gathered weights the residual stream is 16-bit too (shapes.ACT_DTYPES["16-gathered"])."""
    from bigtrain.config import gathered_dtype

    if gathered_dtype(cfg.strategy, precision) in ("bfloat16", "float16"):
        return "16-gathered"
    return precision


def _transformer_costs(cfg: Any, spec: Any, micro: int, precision: str) -> dict:
    """Parameters, FLOPs and activation memory of a transformer from its config alone
    (models/shapes.py), without torch: a meta forward of a 175B model would also work, but the
    formulas say *why*, cover activation checkpointing, which no forward pass can measure, and
    answer in milliseconds."""
    from bigtrain.config import checkpointing

    vocab, seq_len = model_vocab(cfg.model, spec.num_outputs), spec.seq_len
    params = tf.transformer_params(cfg.model, vocab)
    per_token = tf.flops_per_token(cfg.model, vocab, seq_len)
    act = activation_precision(cfg, precision)
    # autocast keeps a 16-bit copy of each matmul weight for the backward (not of weights that
    # FSDP already gathered in 16 bits)
    mixed = precision in ("bf16-mixed", "16-mixed") and act == precision
    ac = checkpointing(cfg.strategy)
    block = [p for p in params if p.name.startswith("blocks.0.")]
    return {
        "total": sum(p.numel for p in params),
        "tp_split": sum(p.numel for p in params if p.tp_split),
        "groups": tf.group_audit_rows(cfg.optim, params),
        "flops_per_token": per_token,
        "flops_per_sample": per_token * seq_len,
        "embedding": sum(p.numel for p in params if p.kind == "embedding"),
        "activations": tf.activation_bytes(cfg.model, vocab, micro, seq_len, act, ac),
        "activations_checkpointed": tf.activation_bytes(cfg.model, vocab, micro, seq_len, act, True),
        "autocast_weight_copies": tf.matmul_params(cfg.model, vocab) * 2 if mixed else 0,
        "block_params": (sum(p.numel for p in block), sum(p.numel for p in block if p.tp_split)),
        "checkpointing": ac,
        "act_precision": act,
        "vocab": vocab,
        "seq_len": seq_len,
        "micro": micro,
    }


def _lm_transient(cfg: Any, lm: dict, grad_bytes: int, checkpointed: Any) -> int:
    """Bytes live only around the loss and in the backward, beyond the counted parts
    (shapes.transient_bytes), with this device's share of the gradients."""
    return tf.transient_bytes(
        cfg.model, lm["vocab"], lm["micro"], lm["seq_len"], lm["act_precision"], checkpointed, grad_bytes,
        grads_in_backward=cfg.trainer.accumulate_grad_batches > 1,
    )  # fmt: skip


def fsdp_buffers(cfg: Any, lm: dict, total: int) -> int:
    """Bytes FSDP2 holds beyond the shards, at the backward's peak (docs/lm.md): the root unit's
    gathered weights (embeddings, head, final norm: gathered for the forward and kept for the
    backward), two blocks' gathered weights (the one running and the one prefetched), and one
    block's unsharded gradients, in the compute dtype and cast to the reduce dtype for the
    reduce-scatter. Per device: tensor parallel splits what its plan splits."""
    from bigtrain.config import gathered_dtype, tensor_parallel_size

    s = cfg.strategy
    tp = tensor_parallel_size(s)
    size = {"bfloat16": 2, "float16": 2}.get(gathered_dtype(s, cfg.trainer.precision) or "", 4)
    reduce = 4 if s.reduce_dtype == "float32" else 2
    numel, split = lm["block_params"]
    block = numel - split + split // tp
    root = (total - cfg.model.n_layers * numel) // (tp if lm["tp_split"] else 1)
    return root * size + 2 * block * size + block * (size + reduce)


def run_plan(cfg: Any, run_dir: str | Path, rank: int = 0) -> tuple[Any, dict]:
    """(data spec, plan) of a validated RunConfig; rank zero prints it and writes plan.json.

    Imports neither Lightning nor the data modules, so `dry_run=true` answers in seconds."""
    from bigtrain.data import data_spec
    from bigtrain.util import write_json_atomic

    spec = data_spec(cfg)
    plan = make_plan(cfg, spec)
    if rank == 0:
        print_plan(plan)
        write_json_atomic(Path(run_dir) / "plan.json", plan)
    return spec, plan


def _model_costs(cfg: Any, spec: Any, micro: int, precision: str) -> dict:
    """Parameters, optimizer groups, forward FLOPs and saved activations of the model: from
    models/shapes.py for a transformer (no torch), from a meta-device build for the others."""
    if family(cfg.model.family).plan_from_shapes:
        lm = _transformer_costs(cfg, spec, micro, precision)
        return {
            "lm": lm,
            "total": lm["total"],
            "trainable": lm["total"],
            "tp_split": lm["tp_split"],
            "groups": lm["groups"],
            "fwd_flops": lm["flops_per_sample"] * micro // 3,
            "saved_fp32": 0,
        }
    from bigtrain.config import tensor_parallel_size
    from bigtrain.training.optim import group_audit, optimizer_groups

    model = _planned_model(cfg, spec)
    tp_split = 0
    if tensor_parallel_size(cfg.strategy) > 1:
        from bigtrain.distributed.parallel import tp_sharded_params

        tp_split = tp_sharded_params(model)
    groups = group_audit(optimizer_groups(cfg.optim, model))
    fwd_flops, saved_fp32 = _forward_costs(cfg, model, spec, micro)
    return {
        "lm": None,
        "total": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "tp_split": tp_split,
        "groups": groups,
        "fwd_flops": fwd_flops,
        "saved_fp32": saved_fp32,
    }


def _planned_model(cfg: Any, spec: Any) -> torch.nn.Module:
    """The model on the meta device. A model of your own (`_target_`) that cannot be built there
    (it computes with tensors in its __init__) is built on the CPU instead, to count it."""
    try:
        return build_meta_model(cfg.model, spec.input_shape, spec.num_outputs)
    except Exception:
        if not family(cfg.model.family).own_code:
            raise
    from bigtrain.models import build_model

    return build_model(cfg.model, spec.input_shape, spec.num_outputs)


def _forward_costs(cfg: Any, model: torch.nn.Module, spec: Any, micro: int) -> tuple[int | None, int]:
    """(forward FLOPs, bytes saved for backward) of one micro-batch of zeros; for a model of
    your own whose forward does not run on such an input, (None, 0): the plan says unknown."""
    import torch

    model.train()
    device = next(model.parameters(), torch.empty(0, device="meta")).device
    example = torch.zeros((micro, *spec.input_shape), device=device, requires_grad=False)
    try:
        return _meta_forward(model, example)
    except Exception:
        if not family(cfg.model.family).own_code:
            raise
        return None, 0


def _micro_batch(cfg: Any) -> int:
    """Samples per device per forward pass: a data module of your own batches per process."""
    from bigtrain.data import source

    data = source(cfg.data.name)
    if data.batches_itself:
        return data.parts().micro_batch(cfg.data)
    return cfg.micro_batch_size


def _memory(cfg: Any, costs: dict, precision: str) -> dict[str, int]:
    """Bytes per device of weights, gradients, optimizer state and activations."""
    total, trainable, lm = costs["total"], costs["trainable"], costs["lm"]
    pbytes = PARAM_BYTES[precision]
    optimizer = trainable * pbytes * OPTIM_STATES.get(cfg.optim.name, 2)
    if cfg.optim.name == "sgd" and cfg.optim.momentum == 0:
        optimizer = 0
    activations = costs["saved_fp32"] * ACT_BYTES[precision] // 4
    if lm is not None:
        activations = lm["activations"] + lm["autocast_weight_copies"]
    parts = {
        "weights": total * pbytes,
        "gradients": trainable * pbytes,
        "optimizer": optimizer,
        "activations": activations,
    }
    out = shard_memory(parts, cfg, costs["tp_split"] / max(total, 1))
    if lm is not None:
        out["transient"] = _lm_transient(cfg, lm, out["gradients"], lm["checkpointing"])
        if cfg.strategy.name in ("fsdp", "fsdp_tp"):
            out["fsdp_buffers"] = fsdp_buffers(cfg, lm, total)
    return out


def _batch(cfg: Any, micro: int) -> dict:
    """The batch split, and per epoch: training samples, optimizer steps, samples dropped and the
    last step's batch (data/batches.py; null where the data must be read first)."""
    from bigtrain.data import source
    from bigtrain.data.batches import epoch_plan

    per_step = micro * cfg.data_parallel_size * cfg.trainer.accumulate_grad_batches
    return {
        "micro_batch_size": micro,
        "devices": cfg.trainer.devices,
        "num_nodes": cfg.trainer.num_nodes,
        "accumulate_grad_batches": cfg.trainer.accumulate_grad_batches,
        "global_batch_size": per_step if source(cfg.data.name).batches_itself else cfg.data.batch_size,
        "steps_per_call": 1,  # kept for readers of older plans: Lightning runs one step per batch
        "data_parallel_size": cfg.data_parallel_size,
        "tensor_parallel_size": cfg.trainer.devices * cfg.trainer.num_nodes // cfg.data_parallel_size,
        **epoch_plan(cfg),
    }


def _data_sources(cfg: Any, batch: dict) -> list[dict] | None:
    """A corpus mixture's per-source rows over the whole run (data/tokens_record.plan_sources)."""
    from bigtrain.data import source

    rows = source(cfg.data.name).plan_sources
    if rows is None:
        return None
    t, steps = cfg.trainer, batch.get("steps_per_epoch")
    bounds = [t.max_steps] if t.max_steps > 0 else []
    if steps is not None and t.max_epochs is not None and t.max_epochs >= 0:
        bounds.append(steps * t.max_epochs)
    return rows(cfg, min(bounds) if bounds else None)


def make_plan(cfg: Any, spec: Any) -> dict:
    """The plan for a validated RunConfig and DataSpec. A transformer's needs no torch; other
    families are built on the meta device and run through one meta forward pass."""
    micro = _micro_batch(cfg)
    precision = cfg.trainer.precision
    costs = _model_costs(cfg, spec, micro, precision)
    memory = _memory(cfg, costs, precision)
    plan = {
        "model": cfg.model.family,
        "strategy": cfg.strategy.name,
        "precision": precision,
        "params": {"total": costs["total"], "trainable": costs["trainable"]},
        "flops_per_sample": None if costs["fwd_flops"] is None else 3 * costs["fwd_flops"] // max(micro, 1),
        "flops_per_token": None,
        "batch": _batch(cfg, micro),
        "optimizer_groups": costs["groups"],
        "memory_per_device_bytes": {**memory, "total": sum(memory.values())},
    }
    plan["memory_per_device_bytes"]["reserved"] = reserved_bytes(plan["memory_per_device_bytes"])
    if (rows := _data_sources(cfg, plan["batch"])) is not None:
        plan["data_sources"] = rows
    if (lm := costs["lm"]) is not None:
        plan["params"]["embedding"] = lm["embedding"]
        plan["flops_per_token"] = lm["flops_per_token"]
        plan["batch"]["seq_len"] = spec.seq_len
        plan["batch"]["tokens_per_step"] = cfg.data.batch_size * spec.seq_len
        mem = plan["memory_per_device_bytes"]
        mem["activations_checkpointed"] = lm["activations_checkpointed"] + lm["autocast_weight_copies"]
        mem["transient_checkpointed"] = _lm_transient(cfg, lm, mem["gradients"], True)
        mem["total_checkpointed"] = (
            mem["total"] - mem["activations"] - mem["transient"]
            + mem["activations_checkpointed"] + mem["transient_checkpointed"]
        )  # fmt: skip
    return plan


def reserved_bytes(mem: dict[str, int]) -> int:
    """What a GPU's caching allocator reserves for the plan (torch.cuda.max_memory_reserved):
    weights, gradients and optimizer state whole (they live across steps, and the segments of
    gradients freed between steps stay reserved), plus ALLOCATOR_RESERVE x the step's working
    memory at its peak (activations, transients, FSDP's buffers: blocks rounded up and the
    fragments between them). A stated model (docs/lm.md), held against published runs."""
    states = mem["weights"] + mem["gradients"] + mem["optimizer"]
    working = mem["total"] - mem["weights"] - mem["optimizer"]
    return int(states + ALLOCATOR_RESERVE * working)


def shard_memory(memory: dict[str, int], cfg: Any, tp_fraction: float) -> dict[str, int]:
    """Per-device bytes under the strategy. ddp/auto replicate everything. Tensor parallel divides
    the weights its plan splits (`tp_fraction` of all parameters; their gradients and optimizer
    state too) by tp; FSDP then divides all of it by the data-parallel size it shards over
    (devices per node for hybrid sharding). DeepSpeed ZeRO-2 shards gradients and optimizer state
    over all processes, ZeRO-3 weights too. Activations stay per micro-batch (tensor parallel
    shrinks the blocks' inner ones; not counted)."""
    from bigtrain.config import tensor_parallel_size

    s, t = cfg.strategy, cfg.trainer
    world = t.devices * t.num_nodes
    tp = tensor_parallel_size(s)
    out = dict(memory)
    states = ("weights", "gradients", "optimizer")
    if tp > 1:
        kept = 1 - tp_fraction * (1 - 1 / tp)
        out.update({k: int(out[k] * kept) for k in states})
    shards = {"fsdp": world, "fsdp_tp": world // tp, "deepspeed_zero3": world}.get(s.name, 1)
    if s.name == "fsdp" and s.sharding == "hybrid":
        shards = t.devices
    out.update({k: -(-out[k] // shards) for k in states})
    if s.name == "deepspeed_zero2":
        out.update({k: -(-out[k] // world) for k in ("gradients", "optimizer")})
    return out


def _human(n: float, unit: str = "") -> str:
    for suffix in ("", "K", "M", "G", "T", "P"):
        if abs(n) < 1000:
            return f"{n:.3g}{suffix}{unit}"
        n /= 1000
    return f"{n:.3g}E{unit}"


def _bytes(n: float) -> str:
    for suffix in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024:
            return f"{n:.3g} {suffix}"
        n /= 1024
    return f"{n:.3g} PiB"


def print_plan(plan: dict) -> None:
    from rich.table import Table

    table = Table(title="plan", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    p, b, m = plan["params"], plan["batch"], plan["memory_per_device_bytes"]
    table.add_row(
        "model / strategy / precision", f"{plan['model']} / {plan['strategy']} / {plan['precision']}"
    )
    table.add_row("parameters (trainable)", f"{p['total']:,} ({p['trainable']:,})")
    flops = plan["flops_per_sample"]
    table.add_row("training FLOPs per sample", "unknown" if flops is None else _human(flops))
    if plan.get("flops_per_token"):
        table.add_row("training FLOPs per token", _human(plan["flops_per_token"]))
    table.add_row(
        "batch: micro x devices x nodes x accum",
        f"{b['micro_batch_size']} x {b['devices']} x {b['num_nodes']} x {b['accumulate_grad_batches']}"
        f" = {b['global_batch_size']} per step",
    )
    table.add_row("optimizer steps per epoch", _epoch_row(b))
    if b.get("tensor_parallel_size", 1) > 1:
        table.add_row(
            "tensor parallel: devices per group",
            f"{b['tensor_parallel_size']} ({b['data_parallel_size']} groups)",
        )
    for key in ("weights", "gradients", "optimizer", "activations", "transient", "fsdp_buffers"):
        if key in m:
            table.add_row(f"memory per device: {key.replace('_', ' ')}", _bytes(m[key]))
    table.add_row(
        "memory per device: total", f"{_bytes(m['total'])} (a GPU reserves {_bytes(m['reserved'])})"
    )
    if "total_checkpointed" in m and m["total_checkpointed"] != m["total"]:
        table.add_row("  with full activation checkpointing", _bytes(m["total_checkpointed"]))
    from bigtrain.data.shards import corpus_folder

    for row in plan.get("data_sources") or ():
        epochs = "" if row["epochs"] is None else f", {row['epochs']:.3g} epochs"
        drawn = "" if row["tokens_drawn"] is None else f"{_human(row['tokens_drawn'])} tokens of "
        table.add_row(
            f"data: {corpus_folder(row['path']).name} ({row['weight']:.0%})",
            f"{drawn}{_human(row['train_tokens'])}{epochs}",
        )
    echo(table)
    if plan.get("optimizer_groups"):
        print_group_audit(plan["optimizer_groups"])


def _epoch_row(b: dict) -> str:
    """'20 (1,257: last 41, 0 dropped)': steps, training samples, the last step's batch and the
    samples dropped per epoch; or why the count is not known yet."""
    steps = b.get("steps_per_epoch")
    if steps is None:
        return "known once the data is read"
    if b.get("train_samples") is None:  # a token corpus: random windows, a full batch every step
        return f"{steps:,}"
    last = "all full" if b["last_step_batch"] == b["global_batch_size"] else f"last {b['last_step_batch']:,}"
    return f"{steps:,} ({b['train_samples']:,}: {last}, {b['dropped_per_epoch']:,} dropped)"


def print_group_audit(rows: list[dict]) -> None:
    """The parameter groups: which tensors get weight decay, and from which optimizer."""
    from rich.table import Table

    table = Table(title="optimizer parameter groups")
    for col in ("group", "optimizer", "weight decay", "lr", "tensors", "parameters"):
        table.add_column(col, justify="left" if col in ("group", "optimizer") else "right")
    for r in rows:
        table.add_row(
            r["group"],
            r["optimizer"],
            f"{r['weight_decay']:g}",
            f"{r['lr']:g}",
            str(r["tensors"]),
            f"{r['params']:,}",
        )
    echo(table)
