"""A pre-tokenised corpus as a data source (data/source.py): `<base>.bin` + `<base>.json`,
written by `bigtrain-tokens write`. Its checks: both files, then their metadata; its steps per
epoch come from the metadata. Its data module and writer: data/tokens.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bigtrain.config import RunConfig, files_in
from bigtrain.data.source import Source


def check_token_files(cfg: RunConfig) -> Iterator[str]:
    """data=tokens reads <base>.bin and <base>.json, named by either file."""
    path = cfg.data.path
    if os.path.isdir(path):
        yield (
            f"data.path={path} is a directory, not a file: give the .bin or .json file that "
            f"bigtrain-tokens write made{files_in(path, ['.bin', '.json'])}"
        )
        return
    base = path[: -len(".json")] if path.endswith(".json") else path.removesuffix(".bin")
    missing = [base + ext for ext in (".bin", ".json") if not os.path.isfile(base + ext)]
    if missing:
        yield f"data.path={path}: {missing[0]} not found; write it with bigtrain-tokens write"


def steps_per_epoch(d: Any) -> int:
    """Steps of a pre-tokenised corpus (data/tokens.py), from its metadata file; the train range
    is data/text.split_bounds' (that module imports torch)."""
    if d.steps_per_epoch is not None:
        return d.steps_per_epoch
    from bigtrain.data.codec import read_meta

    n = int(read_meta(d.path)["n_tokens"])
    train = n - int(n * d.val_fraction) - int(n * d.test_fraction)
    return max(1, train // (d.seq_len * d.batch_size))


def _files(d: Any) -> list[Path]:
    from bigtrain.data.codec import token_path_base

    base = token_path_base(d.path)
    return [Path(base + ".bin"), Path(base + ".json")]


def _spec(cfg: Any):
    from bigtrain.data.codec import lm_spec

    return lm_spec(cfg.data)


SOURCE = Source(
    name="tokens",
    choices={"tokens": "tokens"},
    module="bigtrain.data.tokens",
    spec=_spec,
    checks=(check_token_files,),
    steps_per_epoch=steps_per_epoch,
    files=_files,
    new_data_keys=("path",),
)
