"""A finished run in memory: `bigtrain.load(RUN_DIR)` gives its model and preprocessing, ready to
predict on raw rows, images or a text prompt, in one process, without Hydra's runtime.

The config comes from the run's .hydra/config.yaml (schema-checked, not cross-checked: the
training data need not exist any more), the preprocessing from the checkpoint (or the run's
preprocessing.json), the weights from the run's best checkpoint (results.json's
`best_checkpoint`, else checkpoints/last.ckpt) or the one named. A checkpoint whose digest does
not match its bytes is refused. A run that kept its checkpoints elsewhere (`checkpoint_dir`, a
folder or an fsspec URL) is read from there only when the caller types that place again (the
`checkpoint_dir` argument, or the checkpoint itself): a run directory does not choose where
bigtrain reads (docs/reliability.md, "Security").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bigtrain.config.errors import ConfigError, first_line
from bigtrain.data import preprocess


def best_checkpoint(
    run_dir: Path, saved_dir: str | None = None, typed_dir: str | None = None, flag: str = "trust_code=True"
):
    """The checkpoint a run's test used: results.json's best_checkpoint, else last.ckpt. A run
    whose config set checkpoint_dir (`saved_dir`) is read from `typed_dir`, the folder the caller
    typed now (ConfigError saying what to type when there is none)."""
    from bigtrain.runs.export import ResultsError, checkpoint_of

    if saved_dir is not None or typed_dir is not None:
        return _elsewhere(run_dir, saved_dir, typed_dir, flag)
    try:
        return checkpoint_of(run_dir)
    except ResultsError as e:  # a damaged results.json: named, never a quiet fall back to last.ckpt
        raise ConfigError(str(e)) from e
    except ValueError as e:
        raise ConfigError(f"{run_dir} has no checkpoint (checkpoints/last.ckpt): train the run first") from e


def _elsewhere(run_dir: Path, saved_dir: str | None, typed_dir: str | None, flag: str):
    """The best (else last) checkpoint in the folder the user typed, for a run that kept its
    checkpoints outside its directory: only the file's name comes from results.json."""
    from bigtrain.runs.export import ResultsError, _best_of
    from bigtrain.training.checkpoint_files import base_name, checkpoint_folder, child, exists

    try:
        best = _best_of(run_dir / "results.json")
    except ResultsError as e:
        raise ConfigError(str(e)) from e
    names = [base_name(best)] if best else []
    if typed_dir is None:
        suggested = child(saved_dir, names[0] if names else "last.ckpt")
        how = f"--checkpoint {suggested}" if flag.startswith("--") else f"checkpoint='{suggested}'"
        raise ConfigError(
            f"{run_dir} keeps its checkpoints in checkpoint_dir={saved_dir}, which a run directory cannot "
            f"choose for you: if you trust that place, name the checkpoint ({how})"
        )
    folder = checkpoint_folder(typed_dir, run_dir)
    for name in [*names, "last.ckpt"]:
        if exists(child(folder, name)):
            return child(folder, name)
    raise ConfigError(
        f"{run_dir} has no checkpoint in {folder} ({', '.join([*names, 'last.ckpt'])}): train the run first"
    )


def saved_config(run_dir: Path, trust_code: bool = False, flag: str = "trust_code=True"):
    """The run's composed config as a RunConfig (schema conversion only; a run saved before
    today's model keys is read in today's terms). A `_target_` outside bigtrain in it is refused
    unless `trust_code` (targets/trust.py); `flag` is how the caller's user says so."""
    from omegaconf import OmegaConf

    from bigtrain.config import parse
    from bigtrain.config.schema_models import upgrade_saved_model
    from bigtrain.runs.rundir import ADDED_KEYS
    from bigtrain.targets.trust import check_trusted

    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise ConfigError(
            f"{run_dir} is not a bigtrain run directory (no .hydra/config.yaml): give a run's folder"
        )
    try:
        saved = OmegaConf.to_container(OmegaConf.load(path))
        if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
            raise TypeError("not a mapping with a model section")
    except Exception as e:  # not YAML, or not a mapping
        raise ConfigError(f"{path} cannot be read ({type(e).__name__}): the run's config is damaged") from e
    check_trusted(saved, trust_code, f"{path}", flag)
    try:
        model = upgrade_saved_model(dict(saved["model"]))
        if "init_from" in model:
            model["init_from"] = None  # the checkpoint's weights replace what training started from
        # Keys added since the run was saved take the values that behave as it did.
        return parse(OmegaConf.create({**ADDED_KEYS, **saved, "model": model}))
    except ConfigError:
        raise
    except Exception as e:  # values OmegaConf or the schema cannot hold
        raise ConfigError(f"{path} cannot be read ({type(e).__name__}): the run's config is damaged") from e


def _read_checkpoint(ckpt: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """(model weights, preprocessing saved in the checkpoint, if any). A file must match its
    digest file; one without (made elsewhere, or by an older bigtrain) loads unverified, with one
    warning line on stderr. Whatever is wrong with the file is one ConfigError line naming it."""
    import sys

    from bigtrain.runs.export import PREFIX, load_weights
    from bigtrain.training.checkpoint_files import (
        CheckpointError,
        base_name,
        exists,
        load_checkpoint_file,
        read_digests,
    )

    if not exists(ckpt):
        raise ConfigError(f"checkpoint {ckpt} does not exist: give a .ckpt file or a run's checkpoint folder")
    local = isinstance(ckpt, Path)
    verified = (local and ckpt.is_dir()) or read_digests(ckpt) is not None  # shards carry no digest
    try:
        if local and ckpt.is_dir():
            weights, _ = _sharded_weights(ckpt, load_weights)
            meta = load_checkpoint_file(ckpt / "meta.pt", mmap=True)
        else:
            meta = _load_file(ckpt, verified)
            state = meta.get("state_dict") if isinstance(meta, dict) else None
            if not isinstance(state, dict):
                raise CheckpointError(
                    f"{base_name(ckpt)} is not a training checkpoint (it has no state_dict)"
                )
            weights = {k[len(PREFIX) :]: v for k, v in state.items() if k.startswith(PREFIX)}
        if not weights:
            raise CheckpointError(
                f"{base_name(ckpt)} holds no model weights (no {PREFIX}* keys in its state_dict)"
            )
    except CheckpointError as e:
        raise ConfigError(_checkpoint_line(ckpt, e)) from e
    prep = meta.get("bigtrain_preprocessing") if isinstance(meta, dict) else None
    if prep is not None and (problem := preprocess.problem(prep)) is not None:
        raise ConfigError(
            f"checkpoint {ckpt} holds damaged preprocessing ({problem}): choose another checkpoint"
        )
    if not verified:
        sys.stderr.write(f"bigtrain: warning: checkpoint {ckpt} has no digest file: loaded unverified\n")
    return weights, prep


def _load_file(ckpt, verify: bool) -> Any:
    """The checkpoint file, memory-mapped when it is torch's zip format (only the weights are then
    read); anything else (a plain pickle) is loaded whole, so that what it is gets named. A remote
    one (a URL) is read whole."""
    import warnings
    import zipfile

    from bigtrain.training.checkpoint_files import load_checkpoint_file

    mmap = isinstance(ckpt, Path) and zipfile.is_zipfile(ckpt)
    with warnings.catch_warnings():  # torch's note on a pickle protocol it did not write
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        return load_checkpoint_file(ckpt, mmap=mmap, verify=verify)


def _sharded_weights(ckpt: Path, load_weights) -> tuple[dict, dict]:
    """load_weights of a sharded folder, whose reader raises what torch.distributed.checkpoint
    raises: a missing or truncated shard is a CheckpointError."""
    from bigtrain.training.checkpoint_files import CheckpointError

    try:
        return load_weights(ckpt)
    except Exception as e:
        reason = first_line(e)
        raise CheckpointError(f"{ckpt.name} (a sharded checkpoint) cannot be read ({reason})") from e


def _checkpoint_line(ckpt, e: Exception) -> str:
    """A CheckpointError's line with the file's full path, and what to do from eval, predict or
    load (which take no trust flag: bigtrain's own checkpoints never need one)."""
    from bigtrain.training.checkpoint_files import base_name

    text, name = str(e), base_name(ckpt)
    if text.startswith(name):
        text = f"{ckpt}{text[len(name) :]}"
    text = text.split(": if you trust where it came from", 1)[0]
    return f"{text}: restore it from a copy of the run, or choose another checkpoint"


@dataclass
class Trained:
    """A trained model with what turns raw inputs into its inputs."""

    module: Any  # BigtrainModule, in eval mode on the CPU
    cfg: Any  # RunConfig
    preprocessing: dict
    run_dir: Path
    checkpoint: Path | str  # a URL where the run kept its checkpoints elsewhere (checkpoint_dir)

    @property
    def kind(self) -> str:
        return self.preprocessing["kind"]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.preprocessing["spec"]["input_shape"])

    @property
    def class_names(self) -> list[str] | None:
        return preprocess.class_names(self.preprocessing)

    @torch.no_grad()
    def outputs(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Probabilities (classification: (N,) for binary, (N, C) for multiclass) or values."""
        m = self.module
        return torch.cat([m.predictions(m(x[i : i + batch_size])) for i in range(0, len(x), batch_size)])

    def predict(self, source: str | Path, **generation: Any) -> Any:
        """Rows of a table file, images or audio clips (a file or folder): a list of dicts, one per
        input (`predicted` and a probability per class, the predicted value, or a transcript). A language model:
        the prompt's continuation (str); `generation`: max_new_tokens, temperature, top_k, seed."""
        from bigtrain.runs.predict import generate_text, predict_audio, predict_images, predict_table

        if self.kind == "text":
            return generate_text(self, str(source), **generation)
        if self.kind == "table":
            return predict_table(self, source)
        if self.kind == "audio":
            return predict_audio(self, source)
        return predict_images(self, source)


def load(
    run_dir: str | Path,
    checkpoint: str | Path | None = None,
    trust_code: bool = False,
    flag: str = "trust_code=True",
    checkpoint_dir: str | None = None,
) -> Trained:
    """The trained model of `run_dir` (its best checkpoint, or `checkpoint`: a file, a sharded
    folder or a URL). `trust_code`: build a `_target_` model outside bigtrain that the run's config
    names; `checkpoint_dir`: where a run that set checkpoint_dir keeps its checkpoints (both typed
    by the user now)."""
    from bigtrain.build import build_module
    from bigtrain.training.checkpoint_files import location

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} does not exist: give the run directory of a finished run")
    cfg = saved_config(run_dir, trust_code, flag)
    ckpt = (
        location(checkpoint)
        if checkpoint is not None
        else best_checkpoint(run_dir, cfg.checkpoint_dir, checkpoint_dir, flag)
    )
    weights, prep = _read_checkpoint(ckpt)
    if prep is None:
        saved = run_dir / preprocess.FILE
        if not saved.is_file():
            raise ConfigError(
                f"{run_dir} has no {preprocess.FILE}: eval and predict need a run on bigtrain's own data "
                "options (a run on a data module of yours, or one from before bigtrain saved preprocessing, has none)"
            )
        prep = preprocess.read_file(saved)
    spec = preprocess.spec_of(prep)
    module = build_module(cfg, spec, 1.0)
    try:
        module.model.load_state_dict(weights)
    except RuntimeError as e:  # names or shapes of another model
        first = (str(e).strip().splitlines() or ["the weights do not fit"])[-1].strip()
        raise ConfigError(
            f"checkpoint {ckpt} holds the weights of another model than {run_dir}/.hydra/config.yaml "
            f"describes ({first}): give a checkpoint of this run"
        ) from e
    module.preprocessing = prep
    module.parallel_cfg = None  # one process: no sharding to apply
    return Trained(module.eval(), cfg, prep, run_dir, ckpt)
