"""Export a checkpoint's model weights as one plain file: `python -m bigtrain.runs.export CKPT OUT.pt`.

CKPT is either a sharded checkpoint directory (what strategy=fsdp, tp and fsdp_tp save: one
shard per rank plus meta.pt) or a single-file .ckpt. OUT holds {"state_dict": weights keyed as
the model's own state_dict (no "model." prefix, no optimizer), "hyper_parameters": the run's
config}, loadable with `torch.load(OUT, weights_only=True)` and `model.load_state_dict(...)` into
the model built on one device. Runs in one process; no process group is needed. Needs host
memory for the whole model (not the optimizer state: only the weights are read).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

PREFIX = "model."  # the LightningModule holds the model as `self.model`


def load_weights(ckpt: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(weights of the model, hyper-parameters) from a sharded directory or a .ckpt file."""
    path = Path(ckpt)
    if path.is_dir():
        from torch.distributed.checkpoint import FileSystemReader
        from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
        from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

        state: dict = {}
        # keys=["state_dict"] reads the weights only, not the optimizer shards.
        _load_state_dict(
            state,
            storage_reader=FileSystemReader(path),
            planner=_EmptyStateDictLoadPlanner(keys=["state_dict"]),
            no_dist=True,
        )
        meta = torch.load(path / "meta.pt", map_location="cpu", weights_only=True)
        full = state["state_dict"]
    else:
        meta = torch.load(path, map_location="cpu", weights_only=True)
        full = meta.pop("state_dict")
    weights = {k[len(PREFIX) :]: v for k, v in full.items() if k.startswith(PREFIX)}
    return weights, meta.get("hyper_parameters", {})


def export(ckpt: str | Path, out: str | Path) -> Path:
    """Write the consolidated weights of `ckpt` to `out`; returns `out`."""
    weights, hparams = load_weights(ckpt)
    if not weights:
        raise ValueError(f"{ckpt} holds no model weights (keys starting with {PREFIX!r})")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": weights, "hyper_parameters": hparams}, out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bigtrain.runs.export", description=__doc__.splitlines()[0]
    )
    parser.add_argument("ckpt", help="sharded checkpoint directory or .ckpt file")
    parser.add_argument("out", help="the single file to write, e.g. weights.pt")
    args = parser.parse_args(argv)
    if not Path(args.ckpt).exists():
        sys.stderr.write(f"bigtrain.runs.export: error: {args.ckpt} does not exist\n")
        sys.exit(2)
    out = export(args.ckpt, args.out)
    n = sum(v.numel() for v in torch.load(out, weights_only=True)["state_dict"].values())
    print(f"wrote {out}: {n:,} parameters")


if __name__ == "__main__":
    main()
