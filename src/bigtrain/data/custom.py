"""A data module of your own, given by `_target_` (docs/extending.md): built, held to bigtrain's
contract, and described by the DataSpec the model and the plan need.

The contract: a pytorch_lightning.LightningDataModule whose train, val (and, for the test after
fit, test) loaders yield (x, y) batches of tensors, y the class index; after its __init__ it has
`num_classes` (2 or more) and may have `task` ("binary" or "multiclass"; 2 classes default to
binary), `class_names`, `input_shape` (x's shape without the batch) and `batch_size` (per
process). Without `input_shape` or `batch_size` bigtrain calls `setup("fit")` and reads one
training batch for them, so `setup` must allow being called again (Lightning's advice anyway).

Validation builds the data module (its __init__ only) to check the contract before the run
directory exists; the run takes that same instance (one per process and data config).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bigtrain.config.errors import ConfigError
from bigtrain.data.source import DataSpec

TASKS = ("binary", "multiclass")
LOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")


@dataclass
class Held:
    """A data module made for one data config, and what was learned from it."""

    dm: Any
    spec: DataSpec | None = None
    batch_size: int | None = None


HELD: dict[str, Held] = {}


def _key(d: Any) -> str:
    return json.dumps([d.target, d.arguments], sort_keys=True, default=str)


def _build(d: Any) -> Any:
    from bigtrain.targets import partial, resolve

    resolve(d.target, "data")  # one line if it does not import
    try:
        return partial(d.target, d.arguments)()
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise ConfigError(
            f"data._target_={d.target}: building it failed ({type(e).__name__}: {first}): fix its arguments or its __init__"
        ) from e


def held(d: Any) -> Held:
    """The data module of config `d`: the one made already in this process, else a new one."""
    key = _key(d)
    if key not in HELD:
        HELD[key] = Held(_build(d))
    return HELD[key]


def contract_problems(dm: Any, target: str, test: bool = True) -> list[str]:
    """One line per way `dm` breaks the contract (the module docstring)."""
    import pytorch_lightning as pl

    where = f"data._target_={target}"
    if not isinstance(dm, pl.LightningDataModule):
        return [
            f"{where} built a {type(dm).__name__}, not a pytorch_lightning.LightningDataModule: return one"
        ]
    lines = []
    n = getattr(dm, "num_classes", None)
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        got = "has no num_classes" if n is None else f"has num_classes={n!r}"
        lines.append(f"{where} {got}: set self.num_classes (an integer, 2 or more) in its __init__")
    task = getattr(dm, "task", None)
    if task is not None and task not in TASKS:
        lines.append(f"{where} has task={task!r}: set self.task to binary or multiclass (or leave it unset)")
    elif task == "binary" and isinstance(n, int) and n != 2:
        lines.append(f"{where} has task='binary' but num_classes={n}: binary tasks have 2 classes")
    names = getattr(dm, "class_names", None)
    if names is not None and isinstance(n, int) and (not isinstance(names, (list, tuple)) or len(names) != n):
        lines.append(
            f"{where} has class_names that are not a list of num_classes={n} names: fix or remove it"
        )
    for loader in LOADERS if test else LOADERS[:2]:
        if getattr(type(dm), loader, None) is getattr(pl.LightningDataModule, loader):
            lines.append(f"{where} has no {loader}(): define it (bigtrain trains, validates and tests)")
    return lines


def _first_batch(dm: Any, target: str) -> tuple[tuple[int, ...], int]:
    """(input shape, batch size) of the first training batch."""
    import torch

    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2 and all(torch.is_tensor(t) for t in batch)):
        raise ConfigError(
            f"data._target_={target}: its train_dataloader() yields {type(batch).__name__} batches, not "
            "(x, y) pairs of tensors: make the dataset return (x, y)"
        )
    return tuple(batch[0].shape[1:]), len(batch[0])


def custom_spec(d: Any) -> DataSpec:
    """The DataSpec of config `d`'s data module (one training batch is read unless it declares
    `input_shape` and `batch_size`)."""
    h = held(d)
    if h.spec is not None:
        return h.spec
    dm = h.dm
    problems = contract_problems(dm, d.target, test=False)
    if problems:
        raise ConfigError("\n".join(problems))
    shape, size = getattr(dm, "input_shape", None), getattr(dm, "batch_size", None)
    if shape is None or not isinstance(size, int):
        shape_read, size_read = _first_batch(dm, d.target)
        shape = shape if shape is not None else shape_read
        size = size if isinstance(size, int) else size_read
    n = dm.num_classes
    task = getattr(dm, "task", None) or ("binary" if n == 2 else "multiclass")
    h.spec, h.batch_size = DataSpec(input_shape=tuple(int(s) for s in shape), num_classes=n, task=task), size
    return h.spec


def micro_batch(d: Any) -> int:
    """The data module's batch per process (its loaders' batch)."""
    custom_spec(d)
    return held(d).batch_size


def take(d: Any) -> Any:
    """The data module for the run, no longer held (a later run builds its own): with a
    `describe()` for the console line when it has none of its own."""
    spec = custom_spec(d)
    h = HELD.pop(_key(d))
    dm = h.dm
    if not callable(getattr(dm, "describe", None)):
        names = getattr(dm, "class_names", None)
        classes = f"{spec.num_classes} classes" + (f" ({', '.join(map(str, names))})" if names else "")
        line = (
            f"data: {d.target}: {classes}, inputs {spec.input_shape}, batches of {h.batch_size} per process"
        )
        dm.describe = lambda: line
    return dm


def datamodule(cfg: Any) -> Any:
    """The run's data module: the one validation built and checked (take)."""
    return take(cfg.data)
