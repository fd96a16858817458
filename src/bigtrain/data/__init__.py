"""The data-source registry: `data=<choice>` -> its torch-free record (data/source.py), the spec
of the data before loading it, and its LightningDataModule.

Each data module exposes `spec` (input shape, classes, task) before `setup`, so models and the
plan can be built without loading any data.
"""

from __future__ import annotations

import importlib
from typing import Any

from bigtrain.data.source import DataSpec, Source

# The built-in sources (data/<name>_record.py + data/<name>.py), in the order errors list them.
BUILT_IN = ("sklearn", "tabular", "images", "text", "tokens", "audio", "custom")

_RECORDS: dict[str, Source] = {}

__all__ = ["BUILT_IN", "DataSpec", "Source", "build_datamodule", "data_spec", "source", "sources"]


def sources() -> list[Source]:
    """Every source's record, in BUILT_IN order (each record module imported once)."""
    if len(_RECORDS) < len(BUILT_IN):
        for name in BUILT_IN:
            _RECORDS.setdefault(name, importlib.import_module(f"bigtrain.data.{name}_record").SOURCE)
    return [_RECORDS[name] for name in BUILT_IN]


def source(choice: str) -> Source:
    """The record of the source that reads `data=<choice>`."""
    for record in sources():
        if choice in record.choices:
            return record
    known = [c for r in sources() for c in r.choices]
    raise KeyError(f"unknown data source {choice!r}: choose one of {', '.join(known)}")


def data_spec(cfg: Any) -> DataSpec:
    """The spec of the configured data, without loading it (a user's table is read here once,
    since its class count and one-hot width come from the data)."""
    return source(cfg.data.name).spec(cfg)


def build_datamodule(cfg: Any) -> Any:
    """The LightningDataModule for a validated RunConfig."""
    return source(cfg.data.name).parts().datamodule(cfg)
