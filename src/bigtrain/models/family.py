"""The model-family registry: one record per family, everything bigtrain knows about it.

A family is two files: `models/<name>_record.py`, torch-free, whose FAMILY record gives its
config schema, the kind of input it takes, whether it has a tensor-parallel plan, its config
checks and where its torch side lives; and `models/<name>.py`, the plain nn.Module with the
family's torch functions (the *parts*):

    build(cfg, input_shape, num_outputs) -> nn.Module
    blocks(model) -> [names]        repeated blocks: activation checkpointing and compile units
    fsdp_units(model) -> [names]    FSDP2 units (the root takes the rest)
    tp_plan(model, sequence_parallel) -> {name: ParallelStyle}   only where tensor_parallel

Everything else (validation, the plan, parallel.py, the build, export) asks the record or its
parts; nothing outside a family's files tests its name. Validation and the dry run read records
only, so they never import torch. A model of your own (`_target_`) is the family "custom",
whose parts read what your class declares (models/custom.py, docs/extending.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

# The built-in families, in the order `--help` and errors list them.
BUILT_IN = ("mlp", "cnn", "vit", "transformer", "kws_cnn", "audio_transformer", "custom")

Check = Callable[[Any], Iterator[str]]


@dataclass(frozen=True)
class Family:
    """What one model family is, for everything but its nn.Module."""

    name: str
    # features: any shape, flattened (tables, digits); image: (C, H, W); tokens: token windows;
    # audio: log-mel spectrograms (1, n_mels, frames).
    inputs: Literal["features", "image", "tokens", "audio"]
    # The module of its nn.Module and torch functions (build, blocks, fsdp_units, tp_plan).
    module: str
    # Config checks of the model's own shape and against the data: each takes the RunConfig and
    # yields one line per problem.
    checks: tuple[Check, ...] = ()
    # The checks of a tensor-parallel run (the RunConfig and the tensor-parallel size) when its
    # parts have a plan; None: it has none, and strategy=tp or fsdp_tp is refused in one line.
    tp_checks: Callable[[Any, int], Iterator[str]] | None = None
    # A Hugging Face causal-LM layout (model.init_from, export --format hf).
    hf_layout: bool = False
    # The plan counts it from torch-free shape tables (models/shapes.py) instead of a meta build,
    # so a dry run of any size never imports torch.
    plan_from_shapes: bool = False
    # Built by code of the user's: it may not build on the meta device, nor run on zeros.
    own_code: bool = False

    def parts(self) -> ModuleType:
        """The family's torch side (imports torch)."""
        return importlib.import_module(self.module)

    @property
    def language_model(self) -> bool:
        """Takes token windows and predicts the next token: LM data, metrics and samples."""
        return self.inputs == "tokens"

    def tensor_parallel_problems(self, cfg: Any, tp: int) -> Iterator[str]:
        """One line per reason tensor parallelism of size `tp` cannot split this model."""
        if self.tp_checks is None:
            yield (
                f"strategy={cfg.strategy.name} has no tensor-parallel plan for model family "
                f"'{self.name}': use strategy=fsdp or strategy=ddp"
            )
            return
        yield from self.tp_checks(cfg, tp)


_RECORDS: dict[str, Family] = {}


def family(name: str) -> Family:
    """The record of family `name` (imports its torch-free record module once)."""
    record = _RECORDS.get(name)
    if record is None:
        if name not in BUILT_IN:
            raise KeyError(f"unknown model family {name!r}: choose one of {', '.join(BUILT_IN)}")
        record = importlib.import_module(f"bigtrain.models.{name}_record").FAMILY
        _RECORDS[name] = record
    return record


def families() -> list[Family]:
    """Every family's record, in BUILT_IN order."""
    return [family(name) for name in BUILT_IN]


def of(model: Any) -> Family:
    """The record of a built model (its `config.family`)."""
    return family(model.config.family)
