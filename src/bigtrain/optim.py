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

# Weight decay pulls weights toward zero; on biases, norm gains and embeddings that only hurts
# (a norm gain of 0 switches a channel off), so by default they go in a group without decay.
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
DEFAULT_NO_DECAY = ("bias", "norm", "embedding")


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
    skip = set(no_decay)
    decay, rest = [], []
    for module, name, p in _named_trainable(model):
        (rest if param_kind(module, name, p) in skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "group": "decay"}]
    if rest:
        groups.append({"params": rest, "weight_decay": 0.0, "group": "no_decay"})
    return groups


def optimizer_groups(cfg: Any, model: nn.Module) -> list[dict]:
    """The parameter groups `build_optimizer` makes, each with its name, optimizer, decay and lr."""
    if cfg.name == "muon":
        muon, decay, plain = muon_partition(model, cfg.no_decay)
        fb = cfg.fallback
        groups = [
            {
                "params": muon,
                "weight_decay": cfg.weight_decay,
                "group": "muon",
                "optimizer": "muon",
                "lr": cfg.lr,
            },
            {"params": decay, "weight_decay": cfg.weight_decay, "group": f"{fb}_decay", "optimizer": fb},
            {"params": plain, "weight_decay": 0.0, "group": f"{fb}_no_decay", "optimizer": fb},
        ]
        for g in groups[1:]:
            g["lr"] = cfg.fallback_lr
        return [g for g in groups if g["params"]]
    groups = param_groups(model, cfg.weight_decay, cfg.no_decay)
    for g in groups:
        g.update(optimizer=cfg.name, lr=cfg.lr)
    return groups


def group_audit(groups: list[dict]) -> list[dict]:
    """One row per parameter group: name, optimizer, decay, rate, and counts of tensors and values."""
    return [
        {
            "group": g.get("group", f"pg{i}"),
            "optimizer": g.get("optimizer", ""),
            "weight_decay": g["weight_decay"],
            "lr": g.get("lr"),
            "tensors": len(g["params"]),
            "params": sum(p.numel() for p in g["params"]),
        }
        for i, g in enumerate(groups)
    ]


def _impl_kwargs(implementation: str) -> dict:
    """torch's switches: foreach = one kernel per op over a list of tensors; fused = one kernel."""
    return {
        "auto": {},
        "for_loop": {"foreach": False},
        "foreach": {"foreach": True},
        "fused": {"fused": True},
    }[implementation]


def build_optimizer(cfg: Any, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer named by `cfg.name` (a validated optim config)."""
    if cfg.name == "muon":
        return build_muon(cfg, model)
    groups = optimizer_groups(cfg, model)
    impl = _impl_kwargs(cfg.implementation)
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


def muon_partition(model: nn.Module, no_decay: Iterable[str]) -> tuple[list, list, list]:
    """(2-D weight matrices for Muon, other tensors with decay, other tensors without decay)."""
    skip = set(no_decay)
    muon, decay, plain = [], [], []
    for module, name, p in _named_trainable(model):
        kind = param_kind(module, name, p)
        if kind == "weight" and p.ndim == 2:
            muon.append(p)
        else:
            (plain if kind in skip else decay).append(p)
    return muon, decay, plain


def build_muon(cfg: Any, model: nn.Module) -> ChainedOptimizer:
    """Muon on 2-D weight matrices; everything else (biases, norms, embeddings, conv kernels)
    on the fallback optimizer, because Muon orthogonalises matrix-shaped updates only."""
    if not hasattr(torch.optim, "Muon"):
        raise RuntimeError(f"optim=muon needs torch.optim.Muon, which torch {torch.__version__} lacks")
    groups = optimizer_groups(cfg, model)
    muon_groups = [g for g in groups if g["optimizer"] == "muon"]
    fallback_groups = [g for g in groups if g["optimizer"] != "muon"]
    impl = _impl_kwargs(cfg.implementation)
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
