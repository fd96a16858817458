"""Export a checkpoint's model weights as one plain file or a Hugging Face folder:
`bigtrain export SOURCE OUT [--format pt|hf]` (also `python -m bigtrain.runs.export ...`).

SOURCE is a run directory (its best checkpoint: results.json's `best_checkpoint`, else
checkpoints/last.ckpt), a sharded checkpoint directory (what strategy=fsdp, tp and fsdp_tp save:
one shard per rank plus meta.pt) or a single-file .ckpt. With `--format pt` (the default) OUT
holds {"state_dict": weights keyed as the model's own state_dict (no "model." prefix, no
optimizer), "hyper_parameters": the run's config}, loadable with `torch.load(OUT,
weights_only=True)` and `model.load_state_dict(...)` into the model built on one device. With
`--format hf` OUT is a folder, config.json and model.safetensors, in GPT-2's or LLaMA's layout
(models/hf.py), that `transformers.AutoModelForCausalLM.from_pretrained(OUT)` loads. Runs in one
process; no process group is needed.

Sharded directories are read with torch's public `torch.distributed.checkpoint.load` into full
tensors allocated from the checkpoint's own metadata, for the "state_dict" entries only.
(`format_utils.dcp_to_torch_save` would consolidate the optimizer state too and write it all to
disk first; its other helpers convert the other way, a torch.save file into a sharded load.)

Memory: a consolidation holds the whole model's weights once in host memory, in their saved
dtype (parameters x bytes per element, e.g. 2 GB for 1B bf16 parameters), while they are written
out. The optimizer state is never read: from a directory only the weight shards are loaded, and
a .ckpt file is memory-mapped, so only the weight tensors are paged in. Non-tensor entries of a
state_dict (pickled objects) are not read, so nothing is unpickled.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import warnings
from pathlib import Path

import torch

from bigtrain.config.errors import first_line
from bigtrain.models.family import BUILT_IN, family
from bigtrain.models.hf import HFError

FORMATS = ("pt", "hf")
PREFIX = "model."  # the LightningModule holds the model as `self.model`
STATE = "state_dict."  # the weights' keys in a sharded checkpoint: "state_dict.<module key>"


def _sharded_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The module state_dict of a torch.distributed.checkpoint directory, as full CPU tensors."""
    from torch.distributed.checkpoint import FileSystemReader, TensorStorageMetadata, load

    reader = FileSystemReader(path)
    wanted = {
        key[len(STATE) :]: torch.empty(meta.size, dtype=meta.properties.dtype)
        for key, meta in reader.read_metadata().state_dict_metadata.items()
        if key.startswith(STATE) and isinstance(meta, TensorStorageMetadata)
    }
    state = {"state_dict": wanted}
    with warnings.catch_warnings():  # one process, no process group: that is the intent
        warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process")
        load(state, storage_reader=reader, no_dist=True)
    return state["state_dict"]


def load_weights(ckpt: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(weights of the model, hyper-parameters) from a sharded directory or a .ckpt file."""
    path = Path(ckpt)
    if path.is_dir():
        full = _sharded_state_dict(path)
        meta = torch.load(path / "meta.pt", map_location="cpu", weights_only=True)
    else:
        meta = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        full = meta.pop("state_dict")
    weights = {k[len(PREFIX) :]: v for k, v in full.items() if k.startswith(PREFIX)}
    return weights, meta.get("hyper_parameters", {})


class ResultsError(ValueError):
    """A run's results.json that cannot say which checkpoint is its best; the message names it."""


def checkpoint_of(source: str | Path) -> Path:
    """The checkpoint SOURCE names: a run directory's best (or last) one, else SOURCE itself."""
    path = Path(source)
    if not (path.is_dir() and ((path / ".hydra").is_dir() or (path / "checkpoints").is_dir())):
        return path
    best = _best_of(path / "results.json")
    if best and (path / best).exists():
        return path / best
    if (path / "checkpoints" / "last.ckpt").exists():
        return path / "checkpoints" / "last.ckpt"
    raise ValueError(f"{source} has no checkpoint (results.json's best_checkpoint, checkpoints/last.ckpt)")


def _best_of(results: Path) -> str | None:
    """results.json's best_checkpoint (None when the file is missing, as after a kill, or names
    none); a damaged file is a ValueError naming it, never a quiet fall back to last.ckpt."""
    fix = (
        "restore it from a copy of the run, or name the checkpoint file instead "
        "(eval and predict: --checkpoint)"
    )
    try:
        saved = json.loads(results.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:  # not UTF-8, not JSON
        reason = first_line(e)
        raise ResultsError(f"{results} cannot be read ({reason}): {fix}") from e
    best = saved.get("best_checkpoint") if isinstance(saved, dict) else None
    if not isinstance(saved, dict) or not (best is None or isinstance(best, str)):
        raise ResultsError(f"{results} is not a run's results (an object with best_checkpoint): {fix}")
    return best


def export_hf(source: str | Path, out: str | Path) -> tuple[Path, str, int]:
    """Write the weights of SOURCE as a Hugging Face folder `out`; (out, gpt2 or llama, parameters)."""
    from bigtrain.config import TransformerConfig
    from bigtrain.config.schema_models import upgrade_saved_model
    from bigtrain.models.hf import write_folder

    ckpt = checkpoint_of(source)
    weights, hparams = load_weights(ckpt)
    section = upgrade_saved_model(dict(hparams.get("model") or {}))
    if section.get("family") not in BUILT_IN or not family(section["family"]).hf_layout:
        raise HFError(
            f"{ckpt} holds a {section.get('family', 'unknown')} model: --format hf writes transformers"
        )
    names = [f.name for f in dataclasses.fields(TransformerConfig)]
    missing = [n for n in names if n not in section]
    if missing:
        raise HFError(f"{ckpt}: its saved model config lacks {', '.join(missing)}")
    model = TransformerConfig(**{n: section[n] for n in names})
    folder, kind = write_folder(weights, model, out)
    n = sum(v.numel() for k, v in weights.items() if not (model.tie_embeddings and k == "head.weight"))
    return folder, kind, n


def export(ckpt: str | Path, out: str | Path) -> Path:
    """Write the consolidated weights of `ckpt` to `out`; returns `out`."""
    weights, hparams = load_weights(checkpoint_of(ckpt))
    if not weights:
        raise ValueError(f"{ckpt} holds no model weights (keys starting with {PREFIX!r})")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": weights, "hyper_parameters": hparams}, out)
    return out


def main(argv: list[str] | None = None, prog: str = "python -m bigtrain.runs.export") -> None:
    """The command line: export SOURCE to OUT and say how many parameters it wrote."""
    parser = argparse.ArgumentParser(prog=prog, description=" ".join(__doc__.splitlines()[:2]))
    parser.add_argument("ckpt", help="run directory, sharded checkpoint directory or .ckpt file")
    parser.add_argument("out", help="the file to write (pt, e.g. weights.pt) or the folder (hf)")
    parser.add_argument(
        "--format", choices=FORMATS, default="pt", help="pt: one torch file; hf: a Hugging Face folder"
    )
    args = parser.parse_args(argv)
    if not Path(args.ckpt).exists():
        sys.stderr.write(f"{prog}: error: {args.ckpt} does not exist\n")
        sys.exit(2)
    try:
        if args.format == "hf":
            folder, kind, n = export_hf(args.ckpt, args.out)
            print(f"wrote {folder}: {n:,} parameters as {kind} (config.json, model.safetensors)")
            return
        out = export(args.ckpt, args.out)
    except ValueError as e:  # HFError too: no checkpoint, not a transformer, no HF layout
        sys.stderr.write(f"{prog}: error: {e}\n")
        sys.exit(2)
    n = sum(v.numel() for v in torch.load(out, weights_only=True, mmap=True)["state_dict"].values())
    print(f"wrote {out}: {n:,} parameters")


if __name__ == "__main__":
    main()
