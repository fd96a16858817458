"""A finished run in memory: `bigtrain.load(RUN_DIR)` gives its model and preprocessing, ready to
predict on raw rows, images or a text prompt, in one process, without Hydra's runtime.

The config comes from the run's .hydra/config.yaml (schema-checked, not cross-checked: the
training data need not exist any more), the preprocessing from the checkpoint (or the run's
preprocessing.json), the weights from the run's best checkpoint (results.json's
`best_checkpoint`, else checkpoints/last.ckpt) or the one named. A checkpoint whose digest does
not match its bytes is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bigtrain.config.errors import ConfigError
from bigtrain.data import preprocess


def best_checkpoint(run_dir: Path) -> Path:
    """The checkpoint a run's test used: results.json's best_checkpoint, else last.ckpt."""
    from bigtrain.runs.export import checkpoint_of

    try:
        return checkpoint_of(run_dir)
    except ValueError as e:
        raise ConfigError(f"{run_dir} has no checkpoint (checkpoints/last.ckpt): train the run first") from e


def saved_config(run_dir: Path):
    """The run's composed config as a RunConfig (schema conversion only; a run saved before
    today's model keys is read in today's terms)."""
    from omegaconf import OmegaConf

    from bigtrain.config import parse
    from bigtrain.config.schema_models import upgrade_saved_model

    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise ConfigError(
            f"{run_dir} is not a bigtrain run directory (no .hydra/config.yaml): give a run's folder"
        )
    try:
        saved = OmegaConf.to_container(OmegaConf.load(path))
        model = upgrade_saved_model(dict(saved["model"]))
        if "init_from" in model:
            model["init_from"] = None  # the checkpoint's weights replace what training started from
        return parse(OmegaConf.create({**saved, "model": model}))
    except ConfigError:
        raise
    except Exception as e:  # not YAML, or not a mapping
        raise ConfigError(f"{path} cannot be read ({type(e).__name__}): the run's config is damaged") from e


def _read_checkpoint(ckpt: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """(model weights, preprocessing saved in the checkpoint, if any)."""
    from bigtrain.runs.checkpointing import check_digest
    from bigtrain.runs.export import load_weights

    if not ckpt.exists():
        raise ConfigError(f"checkpoint {ckpt} does not exist: give a .ckpt file or a run's checkpoint folder")
    if ckpt.is_file() and not check_digest(ckpt):
        raise ConfigError(
            f"checkpoint {ckpt} does not match its recorded digest (damaged): choose another one"
        )
    weights, _ = load_weights(ckpt)
    meta_path = ckpt / "meta.pt" if ckpt.is_dir() else ckpt
    meta = torch.load(meta_path, map_location="cpu", weights_only=True, mmap=True)
    return weights, meta.get("bigtrain_preprocessing")


@dataclass
class Trained:
    """A trained model with what turns raw inputs into its inputs."""

    module: Any  # BigtrainModule, in eval mode on the CPU
    cfg: Any  # RunConfig
    preprocessing: dict
    run_dir: Path
    checkpoint: Path

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
        """Rows of a table file or images (a file or folder): a list of dicts, one per input
        (`predicted` and a probability per class, or the predicted value). A language model:
        the prompt's continuation (str); `generation`: max_new_tokens, temperature, top_k, seed."""
        from bigtrain.runs.predict import generate_text, predict_images, predict_table

        if self.kind == "text":
            return generate_text(self, str(source), **generation)
        if self.kind == "table":
            return predict_table(self, source)
        return predict_images(self, source)


def load(run_dir: str | Path, checkpoint: str | Path | None = None) -> Trained:
    """The trained model of `run_dir` (its best checkpoint, or `checkpoint`)."""
    from bigtrain.build import build_module

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} does not exist: give the run directory of a finished run")
    cfg = saved_config(run_dir)
    ckpt = Path(checkpoint) if checkpoint is not None else best_checkpoint(run_dir)
    weights, prep = _read_checkpoint(ckpt)
    if prep is None:
        saved = run_dir / preprocess.FILE
        if not saved.is_file():
            raise ConfigError(
                f"{run_dir} has no {preprocess.FILE}: eval and predict need a run on bigtrain's own data "
                "options (a run on a data module of yours, or one from before bigtrain saved preprocessing, has none)"
            )
        prep = json.loads(saved.read_text())
    spec = preprocess.spec_of(prep)
    module = build_module(cfg, spec, 1.0)
    module.model.load_state_dict(weights)
    module.preprocessing = prep
    module.parallel_cfg = None  # one process: no sharding to apply
    return Trained(module.eval(), cfg, prep, run_dir, ckpt)
