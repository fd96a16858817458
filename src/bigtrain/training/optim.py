"""Optimizers with decay/no-decay parameter groups, and learning-rate schedules.

Schedules are multipliers of the base rate, stepped once per optimizer step (or per epoch with
`sched.interval=epoch`); `plateau` is driven by a validation metric instead. docs/tricks.md
gives the formula of each.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from bigtrain.models.groups import (
    DEFAULT_NO_DECAY,
    audit_rows,
    decay_groups,
    optimizer_group_specs,
    with_tensors,
)

# Norm layers: their weights are gains, which get no weight decay by default (groups.py).
NORM_MODULES = (
    nn.LayerNorm,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.GroupNorm,
    nn.RMSNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
)


def param_kind(module: nn.Module, name: str, p: torch.Tensor) -> str:
    """'embedding', 'norm', 'bias' or 'weight': what decides whether `p` gets weight decay."""
    if isinstance(module, nn.Embedding) or "Embedding" in type(module).__name__:
        return "embedding"
    # Custom norms (an RMSNorm written by hand) are recognised by their class name.
    if isinstance(module, NORM_MODULES) or "Norm" in type(module).__name__:
        return "norm"
    if name.endswith("bias"):
        return "bias"
    # Any other vector is a gain or a scale, which behaves like a norm weight.
    return "norm" if p.ndim < 2 else "weight"


def _named_trainable(model: nn.Module) -> Iterable[tuple[nn.Module, str, nn.Parameter]]:
    seen: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))  # tied weights appear under two modules; optimise them once
            yield module, name, p


def param_groups(
    model: nn.Module, weight_decay: float, no_decay: Iterable[str] = DEFAULT_NO_DECAY
) -> list[dict]:
    """Two groups: matrices and conv kernels with decay; the kinds in `no_decay` without."""
    items = list(_named_trainable(model))
    kinds = [param_kind(m, n, p) for m, n, p in items]
    return with_tensors(decay_groups(kinds, weight_decay, no_decay), [p for _, _, p in items])


def optimizer_groups(cfg: Any, model: nn.Module) -> list[dict]:
    """The parameter groups `build_optimizer` makes, each with its name, optimizer, decay and lr."""
    items = list(_named_trainable(model))
    specs = optimizer_group_specs(cfg, [(param_kind(m, n, p), p.ndim) for m, n, p in items])
    return with_tensors(specs, [p for _, _, p in items])


def group_audit(groups: list[dict]) -> list[dict]:
    """One row per parameter group: name, optimizer, decay, rate, and counts of tensors and values."""
    return audit_rows(groups, lambda p: p.numel())


def _impl_kwargs(implementation: str, params: list | None = None, scaled: bool = False) -> dict:
    """torch's switches: foreach = one kernel per op over a list of tensors; fused = one kernel.

    `auto` takes the fused kernel where torch has one for these parameters: plain floating
    tensors on a CPU or CUDA device (not DTensors: FSDP2 and tensor-parallel shards keep torch's
    default), and no gradient scaler (16-mixed: Lightning refuses to clip gradients that a fused
    step unscales itself). torch's own default on CPU is the per-tensor loop; the fused kernel's
    AdamW step is about 3x faster, 4% of a gpt_stdlib step (docs/performance.md)."""
    if implementation == "auto":
        return {"fused": True} if not scaled and fused_supported(params or []) else {}
    return {
        "for_loop": {"foreach": False},
        "foreach": {"foreach": True},
        "fused": {"fused": True},
    }[implementation]


def fused_supported(params: list) -> bool:
    """Whether every parameter is a plain floating tensor on a device with fused kernels."""
    return bool(params) and all(
        type(p.data) is torch.Tensor and p.is_floating_point() and p.device.type in ("cpu", "cuda")
        for p in params
    )


def build_optimizer(cfg: Any, model: nn.Module, scaled: bool = False) -> torch.optim.Optimizer:
    """The optimizer named by `cfg.name` (a validated optim config); `scaled`: a gradient scaler
    (16-mixed precision) will unscale the gradients before each step."""
    if cfg.name == "muon":
        return build_muon(cfg, model, scaled)
    groups = optimizer_groups(cfg, model)
    impl = _impl_kwargs(cfg.implementation, [p for g in groups for p in g["params"]], scaled)
    if cfg.name == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0, **impl
        )
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, **impl)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, **impl)
    raise ValueError(f"unknown optimizer {cfg.name!r}")


# --------------------------------------------------------------------------- Muon


class ChainedOptimizer(torch.optim.Optimizer):
    """Several optimizers over disjoint parameters, stepped as one.

    Lightning's automatic optimization and the LR schedulers see one optimizer; its
    `param_groups` are the children's own group dicts, so a scheduler that sets a group's "lr"
    sets it in the child that uses it.
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers
        groups = [g for o in optimizers for g in o.param_groups]
        super().__init__(groups, defaults={})
        self.param_groups = groups  # the very same dicts, not copies

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for o in self.optimizers:
            o.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"children": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state_dict: dict) -> None:
        for o, sd in zip(self.optimizers, state_dict["children"], strict=True):
            o.load_state_dict(sd)


def build_muon(cfg: Any, model: nn.Module, scaled: bool = False) -> ChainedOptimizer:
    """Muon on 2-D weight matrices; everything else (biases, norms, embeddings, conv kernels)
    on the fallback optimizer, because Muon orthogonalises matrix-shaped updates only."""
    if not hasattr(torch.optim, "Muon"):
        raise RuntimeError(f"optim=muon needs torch.optim.Muon, which torch {torch.__version__} lacks")
    groups = optimizer_groups(cfg, model)
    muon_groups = [g for g in groups if g["optimizer"] == "muon"]
    fallback_groups = [g for g in groups if g["optimizer"] != "muon"]
    fallback_params = [p for g in fallback_groups for p in g["params"]]
    impl = _impl_kwargs(cfg.implementation, fallback_params, scaled)  # the fallback's kernel
    children: list[torch.optim.Optimizer] = []
    if muon_groups:
        children.append(
            torch.optim.Muon(
                muon_groups,
                lr=cfg.lr,
                weight_decay=cfg.weight_decay,
                momentum=cfg.momentum,
                nesterov=cfg.nesterov,
                ns_steps=cfg.ns_steps,
                adjust_lr_fn=cfg.adjust_lr,
            )
        )
    if fallback_groups:
        cls = torch.optim.AdamW if cfg.fallback == "adamw" else torch.optim.Adam
        children.append(cls(fallback_groups, lr=cfg.fallback_lr, betas=tuple(cfg.betas), eps=cfg.eps, **impl))
    return ChainedOptimizer(children)


# --------------------------------------------------------------------------- schedules


def warmup_length(cfg: Any, total: int) -> int:
    """Warmup intervals: `warmup_steps`, or `warmup_fraction` of all intervals when that is 0."""
    if cfg.warmup_steps:
        return cfg.warmup_steps
    return int(cfg.warmup_fraction * total)


def _decay_shape(shape: str, progress: float) -> float:
    """1 at progress 0, 0 at progress 1."""
    if shape == "linear":
        return 1.0 - progress
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - math.sqrt(progress)


def lr_multiplier(cfg: Any, total_steps: int) -> Callable[[int], float]:
    """The factor on the base learning rate at interval `step` (0-based) of `total_steps`."""
    warmup = warmup_length(cfg, total_steps)
    floor = cfg.min_lr_ratio

    def after_warmup(step: int) -> float:
        s = step - warmup
        if cfg.name == "constant":
            return 1.0
        if cfg.name in ("cosine", "linear"):
            progress = min(1.0, s / max(1, total_steps - warmup))
            return floor + (1.0 - floor) * _decay_shape(cfg.name, progress)
        if cfg.name == "wsd":
            decay = max(1, round(cfg.decay_fraction * total_steps))
            progress = min(1.0, max(0.0, (step - (total_steps - decay)) / decay))
            return floor + (1.0 - floor) * _decay_shape(cfg.decay_shape, progress)
        if cfg.name == "step":
            return max(floor, cfg.gamma ** (s // cfg.step_size))
        if cfg.name == "exponential":
            return max(floor, cfg.gamma**s)
        raise ValueError(f"unknown schedule {cfg.name!r}")

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup  # reaches 1 at the last warmup step, never exactly 0
        return after_warmup(step)

    multiplier(warmup)  # fail now, not at the first step, on an unknown name
    return multiplier


def build_scheduler(
    cfg: Any, optimizer: torch.optim.Optimizer, total_steps: int, val_every_n_epochs: int = 1
) -> dict:
    """A Lightning scheduler config: per step (or epoch), or after validation for `plateau`."""
    if cfg.name == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode=cfg.mode,
            factor=cfg.factor,
            patience=cfg.patience,
            threshold=cfg.threshold,
            cooldown=cfg.cooldown,
            min_lr=[g["lr"] * cfg.min_lr_ratio for g in optimizer.param_groups],
        )
        # Stepped when validation has produced the monitored value, so every n-th epoch.
        return {
            "scheduler": sched,
            "interval": "epoch",
            "frequency": val_every_n_epochs,
            "monitor": cfg.monitor,
            "strict": True,
            "name": "lr",
        }
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(cfg, total_steps))
    return {"scheduler": sched, "interval": cfg.interval, "frequency": 1, "name": "lr"}
