"""Which tensors get weight decay, and which optimizer steps them, from each tensor's kind and
number of dimensions alone. Without torch, so the plan can audit the groups of a model it never
builds (models/shapes.py); optim.py applies the same rule to a built model's parameters.

A kind is what optim.param_kind says of a tensor: "weight", "bias", "norm" or "embedding".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

# Weight decay pulls weights toward zero; on biases, norm gains and embeddings that only hurts
# (a norm gain of 0 switches a channel off), so by default they go in a group without decay.
DEFAULT_NO_DECAY = ("bias", "norm", "embedding")


def decay_groups(
    kinds: Sequence[str], weight_decay: float, no_decay: Iterable[str] = DEFAULT_NO_DECAY
) -> list[dict]:
    """Two groups of tensor indices: the rest with decay (always present), the kinds in
    `no_decay` without (only when there are any)."""
    skip = set(no_decay)
    decay = [i for i, kind in enumerate(kinds) if kind not in skip]
    rest = [i for i, kind in enumerate(kinds) if kind in skip]
    groups = [{"params": decay, "weight_decay": weight_decay, "group": "decay"}]
    if rest:
        groups.append({"params": rest, "weight_decay": 0.0, "group": "no_decay"})
    return groups


def optimizer_group_specs(cfg: Any, tensors: Sequence[tuple[str, int]]) -> list[dict]:
    """The groups `build_optimizer` makes, as tensor indices, for (kind, ndim) per tensor: each
    with its name, optimizer, decay and lr. Under Muon, 2-D weights go to Muon and everything
    else to the fallback optimizer, split by decay; empty groups are left out."""
    kinds = [kind for kind, _ in tensors]
    if cfg.name != "muon":
        groups = decay_groups(kinds, cfg.weight_decay, cfg.no_decay)
        for g in groups:
            g.update(optimizer=cfg.name, lr=cfg.lr)
        return groups
    matrix = [kind == "weight" and ndim == 2 for kind, ndim in tensors]
    skip = set(cfg.no_decay)
    fb = cfg.fallback
    groups = [
        {"params": [i for i, m in enumerate(matrix) if m], "weight_decay": cfg.weight_decay,
         "group": "muon", "optimizer": "muon", "lr": cfg.lr},
        {"params": [i for i, m in enumerate(matrix) if not m and kinds[i] not in skip],
         "weight_decay": cfg.weight_decay, "group": f"{fb}_decay", "optimizer": fb, "lr": cfg.fallback_lr},
        {"params": [i for i, m in enumerate(matrix) if not m and kinds[i] in skip],
         "weight_decay": 0.0, "group": f"{fb}_no_decay", "optimizer": fb, "lr": cfg.fallback_lr},
    ]  # fmt: skip
    return [g for g in groups if g["params"]]


def with_tensors(groups: list[dict], tensors: Sequence[Any]) -> list[dict]:
    """The groups with their indices replaced by the tensors they stand for."""
    return [{**g, "params": [tensors[i] for i in g["params"]]} for g in groups]


def audit_rows(groups: list[dict], numel: Callable[[Any], int]) -> list[dict]:
    """One row per parameter group: name, optimizer, decay, rate, and counts of tensors and values."""
    return [
        {
            "group": g.get("group", f"pg{i}"),
            "optimizer": g.get("optimizer", ""),
            "weight_decay": g["weight_decay"],
            "lr": g.get("lr"),
            "tensors": len(g["params"]),
            "params": sum(numel(p) for p in g["params"]),
        }
        for i, g in enumerate(groups)
    ]
