"""How parallel.py treats a model given by `_target_` (models/custom.py), registered as family
"custom" in parallel.FAMILIES: the whole `net` is one block (activation checkpointing, compile);
each direct child of `net` that holds parameters is one FSDP unit (each item of a ModuleList or
ModuleDict), the root takes the rest; there is no tensor-parallel plan (validation refuses tp)."""

from __future__ import annotations

from torch import nn

from bigtrain.distributed.parallel import FAMILIES, Family


def _units(prefix: str, module: nn.Module) -> list[str]:
    units = []
    for name, child in module.named_children():
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)):  # never called: its items are
            units += _units(f"{prefix}.{name}", child)
        elif next(child.parameters(), None) is not None:
            units.append(f"{prefix}.{name}")
    return units


def custom_units(model: nn.Module) -> list[str]:
    """`net.<child>` for each child of the user's module that has parameters (the items of a
    ModuleList or ModuleDict, which has no forward of its own, each on their own)."""
    net = model.net
    return _units("net", getattr(net, "_checkpoint_wrapped_module", net))  # after checkpointing


def register() -> None:
    """Make family "custom" known to parallel.py (idempotent)."""
    FAMILIES.setdefault("custom", Family(lambda m: ["net"], custom_units, None))
