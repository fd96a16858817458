"""Config checks of the pieces given by `_target_`: the model, the data module and each of
`callbacks.extra` must import and be of the right kind, their arguments must fit the target's
signature, and the data module must keep bigtrain's contract (data/custom.py).

Each check takes the RunConfig and yields one line per problem (bigtrain/checks.py runs them).
They import the user's modules, and with them torch; nothing is imported for a config without
`_target_`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bigtrain.config import RunConfig
from bigtrain.config.errors import ConfigError
from bigtrain.targets import argument_problems, kind_problem, resolve


def _problems(path: str, arguments: dict, where: str, base: type, base_name: str, supplied=()) -> list[str]:
    """Import, kind and signature problems of one target, each one line."""
    try:
        obj = resolve(path, where)
    except ConfigError as e:
        return e.lines
    line = kind_problem(obj, path, where, base, base_name)
    if line is not None:
        return [line]
    return argument_problems(obj, path, arguments, where, supplied)


def check_model_target(cfg: RunConfig) -> Iterator[str]:
    """model._target_ imports, is a torch.nn.Module, and takes the model's arguments; bigtrain
    passes num_outputs and input_shape where its signature names them."""
    m = cfg.model
    if not hasattr(m, "target"):  # a built-in family (only CustomModelConfig names a target)
        return
    from torch import nn

    from bigtrain.models.custom import SUPPLIED

    yield from _problems(m.target, m.arguments, "model", nn.Module, "torch.nn.Module", SUPPLIED)


def check_data_target(cfg: RunConfig) -> Iterator[str]:
    """data._target_ imports, is a LightningDataModule, and takes the data's arguments."""
    d = cfg.data
    if d.name != "custom":
        return
    import pytorch_lightning as pl

    yield from _problems(
        d.target, d.arguments, "data", pl.LightningDataModule, "pytorch_lightning.LightningDataModule"
    )


def check_data_contract(cfg: RunConfig) -> Iterator[str]:
    """The data module, built (its __init__ only), has num_classes and the loaders a run uses.
    Needs a target that imports and fits its arguments (check_data_target)."""
    if cfg.data.name != "custom":
        return
    from bigtrain.data.custom import contract_problems, held

    yield from contract_problems(held(cfg.data).dm, cfg.data.target, test=cfg.test_after_fit)


def check_callback_targets(cfg: RunConfig) -> Iterator[str]:
    """Each of callbacks.extra imports, is a Lightning Callback, and takes its arguments. Needs
    every item to be a mapping with a _target_ (training/checks.check_extra_callbacks)."""
    if not cfg.callbacks.extra:
        return
    import pytorch_lightning as pl

    for i, item in enumerate(cfg.callbacks.extra):
        arguments: dict[str, Any] = {k: v for k, v in item.items() if k != "_target_"}
        yield from _problems(
            item["_target_"], arguments, f"callbacks.extra[{i}]", pl.Callback, "pytorch_lightning.Callback"
        )


def check_custom_data_uses(cfg: RunConfig) -> Iterator[str]:
    """What needs bigtrain's own data: the finders resize its in-memory batches."""
    f = cfg.tricks.finders
    if cfg.data.name == "custom" and (f.lr.enabled or f.batch_size.enabled):
        yield (
            "tricks.finders need bigtrain's own in-memory data, and data._target_ is a data module of "
            "yours: set tricks.finders.lr.enabled=false tricks.finders.batch_size.enabled=false"
        )
