"""A data module of your own (`_target_`) as a data source (data/source.py): its checks import
it, check its arguments against its signature and build it to check bigtrain's contract, before
the run directory exists; it batches per process itself. Building and the contract:
data/custom.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bigtrain.config import RunConfig
from bigtrain.data.source import Source


def check_custom_data_uses(cfg: RunConfig) -> Iterator[str]:
    """What needs bigtrain's own data: the finders resize its in-memory batches."""
    f = cfg.tricks.finders
    if f.lr.enabled or f.batch_size.enabled:
        yield (
            "tricks.finders need bigtrain's own in-memory data, and data._target_ is a data module of "
            "yours: set tricks.finders.lr.enabled=false tricks.finders.batch_size.enabled=false"
        )


def check_data_target(cfg: RunConfig) -> Iterator[str]:
    """data._target_ imports, is a LightningDataModule, and takes the data's arguments."""
    d = cfg.data
    import pytorch_lightning as pl

    from bigtrain.targets import target_problems

    yield from target_problems(
        d.target, d.arguments, "data", pl.LightningDataModule, "pytorch_lightning.LightningDataModule"
    )


def check_data_contract(cfg: RunConfig) -> Iterator[str]:
    """The data module, built (its __init__ only), has num_classes and the loaders a run uses.
    Needs a target that imports and fits its arguments (check_data_target)."""
    from bigtrain.data.custom import contract_problems, held

    yield from contract_problems(held(cfg.data).dm, cfg.data.target, test=cfg.test_after_fit)


def check_custom(cfg: RunConfig) -> Iterator[str]:
    """What it cannot be used with, and, apart from that, its import and arguments, then (when
    those are right) its contract."""
    yield from check_custom_data_uses(cfg)
    problems = list(check_data_target(cfg))
    yield from problems or check_data_contract(cfg)


def _spec(cfg: Any):
    from bigtrain.data.custom import custom_spec

    return custom_spec(cfg.data)


SOURCE = Source(
    name="custom",
    choices={"custom": "features"},
    module="bigtrain.data.custom",
    spec=_spec,
    checks=(check_custom,),
    batches_itself=True,
)
