"""A model of your own, given by `_target_` (docs/extending.md): any torch.nn.Module, built with
its YAML arguments plus what the data says, when its signature asks for them by name:
`num_outputs` (classes, or 1 for binary tasks) and `input_shape` (one sample's shape, a tuple).

It is held as `net` inside CustomModel, whose `config` says family "custom": the state dict keys
of a checkpoint are `model.net.<your names>`.

Your class may say what a built-in family's record says (models/family.py), and then gets the
same parallelism (docs/extending.md, "Your own model family"):
- `bigtrain_blocks = Block` (a class, or a tuple of classes): every submodule of that type is a
  repeated block: one activation-checkpointing, compile and FSDP2 unit. Without it the whole
  `net` is one block, and each child of `net` that holds parameters one FSDP unit.
- `def bigtrain_tp_plan(self, sequence_parallel: bool) -> dict[str, ParallelStyle]`: its
  tensor-parallel plan, names relative to your module (torch's `parallelize_module` plan).
  Without it strategy=tp and fsdp_tp are refused before the run.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from bigtrain.config.errors import ConfigError
from bigtrain.models.custom_record import BLOCKS_ATTRIBUTE, TP_PLAN_METHOD

SUPPLIED = ("num_outputs", "input_shape")


class CustomModel(nn.Module):
    """The user's module as `net`, with the config that tells its family."""

    def __init__(self, cfg: Any, net: nn.Module) -> None:
        super().__init__()
        self.config = cfg
        self.net = net

    def forward(self, x):
        return self.net(x)


def build_custom(cfg: Any, input_shape: tuple[int, ...], num_outputs: int) -> CustomModel:
    """The model of a CustomModelConfig for the data's input shape and outputs."""
    from bigtrain.targets import accepts, partial, resolve

    target = resolve(cfg.target, "model")
    given = {"num_outputs": num_outputs, "input_shape": tuple(input_shape)}
    extra = {k: v for k, v in given.items() if accepts(target, k)}
    net = partial(cfg.target, cfg.arguments)(**extra)
    if not isinstance(net, nn.Module):
        raise ConfigError(
            f"model._target_={cfg.target} returned a {type(net).__name__}, not a torch.nn.Module: return one"
        )
    return CustomModel(cfg, net)


# --------------------------------------------------------------------------- the family's parts
# (models/family.py), read from what the user's class declares.

build = build_custom


def declared_blocks(net: Any) -> tuple[type, ...]:
    """The block classes `net`'s class declares (`bigtrain_blocks`), as a tuple (maybe empty)."""
    declared = getattr(net, BLOCKS_ATTRIBUTE, ())
    return tuple(declared) if isinstance(declared, (tuple, list)) else (declared,)


def _block_names(model: nn.Module) -> list[str] | None:
    """`net.<name>` of each outermost submodule of a declared block class; None: none declared."""
    types = declared_blocks(model.net)
    if not types:
        return None
    names: list[str] = []
    for name, module in model.net.named_modules(prefix="net"):
        if isinstance(module, types) and not any(name.startswith(n + ".") for n in names):
            names.append(name)
    return names


def blocks(model: nn.Module) -> list[str]:
    """The declared blocks, else the whole `net` as one block."""
    found = _block_names(model)
    return found if found is not None else ["net"]


def _children(prefix: str, module: nn.Module) -> list[str]:
    units = []
    for name, child in module.named_children():
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)):  # never called: its items are
            units += _children(f"{prefix}.{name}", child)
        elif next(child.parameters(), None) is not None:
            units.append(f"{prefix}.{name}")
    return units


def fsdp_units(model: nn.Module) -> list[str]:
    """The declared blocks; else each child of `net` that has parameters (the items of a
    ModuleList or ModuleDict, which has no forward of its own, each on their own)."""
    found = _block_names(model)
    return found if found is not None else _children("net", model.net)


def tp_plan(model: nn.Module, sequence_parallel: bool = False) -> dict[str, Any]:
    """The plan the user's class gives (`bigtrain_tp_plan`), its names under `net.`; empty when
    it gives none (validation refuses tensor parallelism then)."""
    method = getattr(model.net, TP_PLAN_METHOD, None)
    plan = method(sequence_parallel) if callable(method) else {}
    return {f"net.{name}": style for name, style in plan.items()}
