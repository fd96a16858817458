"""`bigtrain eval RUN_DIR [overrides]`: a run's checkpoint tested again, on its own test split or on
other data, with the metric keys of results.json's `test` block, saved under RUN_DIR/evals/.

Without overrides that change where the data comes from, the data module is rebuilt from the
run's config (same seed, same split, same statistics learned from the same training split) and
its test split is evaluated: the numbers equal the run's own test metrics for the same
checkpoint, from the data files the run trained on (inputs.json: a changed one is refused unless
accept_changed_data=true, runs/fingerprints.py). Overrides that point the data elsewhere
(`data.path=new.csv`, `data.test_path=...`, `data.root=photos/`, `data.root=new_clips/`,
`data.manifest=new.csv`) evaluate every row, image or clip there, encoded with the run's saved
preprocessing (never statistics of the new data); a language model's new text is evaluated on
its test split. One process, one device (the accelerator the run used, CPU when it is missing).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from bigtrain.config.errors import ConfigError
from bigtrain.data import preprocess


# Where each kind of data comes from: an override of one of these points the data elsewhere.
def run_config(
    run_dir: Path,
    overrides: Sequence[str],
    config_dir: str | None = None,
    trust_code: bool = False,
    flag: str = "--trust-code",
):
    """The run's config with `overrides`, composed and validated as the command does. Its saved
    overrides are data: a `_target_` outside bigtrain is refused before validation imports it,
    unless `trust_code` was typed (`flag` says how)."""
    from omegaconf import OmegaConf

    from bigtrain.runs.compose import compose_run
    from bigtrain.runs.rundir import RunDirError, run_overrides
    from bigtrain.runs.validate import EVAL_CHECKS, validate
    from bigtrain.targets.trust import check_trusted

    try:
        merged, config_dir = run_overrides(run_dir, list(overrides), config_dir)
    except RunDirError as e:
        raise ConfigError(str(e).replace("resume=", "eval ", 1)) from e
    composed = compose_run(merged, config_dir)[0]
    check_trusted(OmegaConf.to_container(composed), trust_code, f"eval {run_dir}", flag)
    return validate(composed, EVAL_CHECKS)  # testing trains nothing: not training's checks


def _new_source(old, new) -> str | None:
    """The value of the data source key that the overrides changed, if any (the keys that point
    at other data are the source record's `new_data_keys`)."""
    from bigtrain.data import source

    for key in source(new.name).new_data_keys:
        if getattr(new, key, None) != getattr(old, key, None) and getattr(new, key, None):
            value = getattr(new, key)
            return value if key != "paths" else list(value)
    return None


def _check_own_data(run_dir: Path, trained, cfg) -> None:
    """On the run's own split, its data files must be the ones it trained on (inputs.json,
    runs/fingerprints.py): a changed file is one ConfigError line, unless accept_changed_data."""
    from bigtrain.runs.fingerprints import check

    if _new_source(trained.cfg.data, cfg.data) is None and not cfg.accept_changed_data:
        check(run_dir, cfg.data)


def _loader(trained, cfg, source):
    """(a test loader over the new source, its description), or (None, None) for the data module."""
    from bigtrain.data.tensors import TensorLoader

    kind, batch = trained.kind, cfg.data.eval_batch_size
    if source is None or kind == "text":
        return None, None
    if kind == "table":
        x, y, rows = preprocess.read_rows(trained.preprocessing, source, "data.path")
        if y is None:
            raise ConfigError(
                f"{source} has no column '{trained.preprocessing['target']}': eval needs the target"
            )
        tensors = (torch.from_numpy(x), torch.from_numpy(y))
        return TensorLoader(tensors, batch, shuffle=False), f"{source}: {rows} rows"
    if kind == "audio":
        return _audio_loader(trained, cfg, source)
    from bigtrain.data.images import list_images

    files, labels = list_images(Path(source), trained.class_names)
    if not files:
        raise ConfigError(f"{source} has no images in class folders named {trained.class_names}")
    x = preprocess.read_images(trained.preprocessing, files)
    return TensorLoader((x, torch.from_numpy(labels)), batch, shuffle=False), f"{source}: {len(files)} images"


def _audio_loader(trained, cfg, source):
    """Every clip of new class folders (data.root=...), or every row of a new manifest
    (data.manifest=...: its split column is not read), as the run's log-mels."""
    from bigtrain.data.audio import encode_texts, list_clips
    from bigtrain.data.audio_record import manifest_base, read_manifest
    from bigtrain.data.tensors import TensorLoader

    prep, d, batch = trained.preprocessing, cfg.data, cfg.data.eval_batch_size
    if prep.get("vocabulary"):
        rows = read_manifest(d.manifest, d.text_column, None)
        files = [manifest_base(d) / r["path"] for r in rows]
        labels, lengths = encode_texts([r["text"] for r in rows], prep["vocabulary"], str(d.manifest))
        x = preprocess.read_audio(prep, files)
        return TensorLoader((x, labels, lengths), batch, shuffle=False), f"{d.manifest}: {len(files)} clips"
    files, classes = list_clips(Path(source), trained.class_names)
    if not files:
        raise ConfigError(f"{source} has no clips in class folders named {trained.class_names}")
    x = preprocess.read_audio(prep, files)
    return TensorLoader((x, torch.from_numpy(classes)), batch, shuffle=False), f"{source}: {len(files)} clips"


def evaluate(
    run_dir: str | Path,
    overrides: Sequence[str] = (),
    checkpoint: str | Path | None = None,
    trust_code: bool = False,
    config_dir: str | None = None,
    flag: str = "trust_code=True",
) -> dict:
    """Test the checkpoint; returns {"checkpoint", "data", "overrides", "test": {metric: value}}
    and writes it to RUN_DIR/evals/<time>.json (never over an earlier one). `trust_code` and
    `config_dir` are the user's own, typed now (a run directory chooses neither)."""
    import pytorch_lightning as pl

    from bigtrain.build import lightning_precision
    from bigtrain.data import build_datamodule
    from bigtrain.runs.inference import load
    from bigtrain.runs.rundir import typed_value

    run_dir = Path(run_dir)
    _evals_folder(run_dir)  # before any work: where the result will go
    typed_dir = typed_value(overrides, "checkpoint_dir")  # where the run kept its checkpoints, if typed
    trained = load(run_dir, checkpoint, trust_code, flag, checkpoint_dir=typed_dir)
    # A checkpoint typed now says where it is: the run's checkpoint_dir is not asked for again.
    named = ["checkpoint_dir=null"] if checkpoint is not None and typed_dir is None else []
    cfg = run_config(run_dir, [*overrides, *named], config_dir, trust_code, flag)
    _check_own_data(run_dir, trained, cfg)
    loader, described = _loader(trained, cfg, _new_source(trained.cfg.data, cfg.data))
    accelerator = cfg.trainer.accelerator
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        accelerator = "cpu"
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(run_dir),
        precision=lightning_precision(cfg.trainer.precision),
    )
    if loader is None:
        dm = build_datamodule(cfg)
        (metrics,) = trainer.test(trained.module, datamodule=dm, verbose=False)
        described = f"the run's test split ({cfg.data.name})"
    else:
        (metrics,) = trainer.test(trained.module, dataloaders=loader, verbose=False)
    ckpt = trained.checkpoint  # a URL (str) where the run kept its checkpoints elsewhere
    out = {
        "checkpoint": str(
            ckpt.relative_to(run_dir) if isinstance(ckpt, Path) and ckpt.is_relative_to(run_dir) else ckpt
        ),
        "data": described,
        "overrides": list(overrides),
        "test": {k.split("/", 1)[1]: float(v) for k, v in metrics.items() if k.startswith("test/")},
    }
    out["file"] = str(_write(run_dir, out))
    return out


def _evals_folder(run_dir: Path) -> Path:
    """RUN_DIR/evals, checked to be a real folder inside the run that takes files (made here if
    missing); ConfigError naming the fix otherwise. Checked before the checkpoint is read."""
    from bigtrain.runs.paths import RunDirError, check_inside
    from bigtrain.runs.rundir import check_writable

    folder = run_dir / "evals"
    try:
        check_inside(run_dir, folder, "eval")
    except RunDirError as e:
        raise ConfigError(str(e)) from e
    try:
        check_writable(folder, what="evals")
    except RunDirError as e:
        raise ConfigError(
            f"eval {run_dir}: the result goes to evals/ inside the run, which cannot be written ({e}): "
            "make the run directory writable, or copy the run somewhere writable and evaluate the copy"
        ) from e
    return folder


def _write(run_dir: Path, result: dict) -> Path:
    from bigtrain.runs.paths import RunDirError, check_inside
    from bigtrain.util import write_text_atomic

    folder = run_dir / "evals"
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    path, n = folder / f"{stamp}.json", 1
    while path.exists() or path.is_symlink():
        n += 1
        path = folder / f"{stamp}-{n}.json"
    try:
        check_inside(run_dir, folder, "eval")  # again: the folder could have changed meanwhile
        folder.mkdir(exist_ok=True)
        write_text_atomic(path, json.dumps(result, indent=1))
    except RunDirError as e:
        raise ConfigError(str(e)) from e
    except OSError as e:
        raise ConfigError(
            f"eval {run_dir}: the result could not be written to {path} ({e.strerror or e}): make the run "
            "directory writable, or copy the run somewhere writable and evaluate the copy"
        ) from e
    return path
