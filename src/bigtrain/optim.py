"""Optimizers with decay/no-decay parameter groups, and per-step learning-rate schedules."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

# Weight decay pulls weights toward zero; on biases, norm gains and embeddings that only hurts
# (a norm gain of 0 switches a channel off), so they go in a group without decay.
NO_DECAY_MODULES = (nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.Embedding)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: matrices and conv kernels with decay; biases, norms, embeddings without."""
    decay, no_decay = [], []
    seen: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))  # tied weights appear under two modules; optimise them once
            if isinstance(module, NO_DECAY_MODULES) or name.endswith("bias") or p.ndim < 2:
                no_decay.append(p)
            else:
                decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "group": "decay"}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "group": "no_decay"})
    return groups


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer named by `cfg.name` (a validated optim config)."""
    groups = param_groups(model, cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0
        )
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    raise ValueError(f"unknown optimizer {cfg.name!r}")


def lr_multiplier(cfg, total_steps: int) -> Callable[[int], float]:
    """The factor on the base learning rate at optimizer step `step` (0-based)."""
    warmup = cfg.warmup_steps
    if warmup == 0 and getattr(cfg, "warmup_fraction", 0.0) > 0:
        warmup = int(cfg.warmup_fraction * total_steps)

    def warm(step: int) -> float:
        return (step + 1) / warmup  # reaches 1 at the last warmup step, never exactly 0

    if cfg.name == "constant":
        return lambda step: warm(step) if step < warmup else 1.0
    if cfg.name == "cosine":
        floor = cfg.min_lr_ratio
        decay_steps = max(1, total_steps - warmup)

        def cosine(step: int) -> float:
            if step < warmup:
                return warm(step)
            progress = min(1.0, (step - warmup) / decay_steps)
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

        return cosine
    raise ValueError(f"unknown schedule {cfg.name!r}")


def build_scheduler(cfg, optimizer: torch.optim.Optimizer, total_steps: int) -> dict:
    """A Lightning scheduler config stepped once per optimizer step."""
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(cfg, total_steps))
    return {"scheduler": sched, "interval": "step", "frequency": 1, "name": "lr"}
