"""The run's checkpoint callbacks: Lightning's ModelCheckpoint with paths relative to its folder in
the state it saves, and last.ckpt as the newest state of the run.

- `RunModelCheckpoint`: ModelCheckpoint keeps absolute paths (its folder, the best and top-k files)
  in every checkpoint, and when a run directory was copied or moved it warns that "the dirpath has
  changed" and forgets which checkpoint was best. This subclass saves them relative to its folder
  and, on load, re-roots relative and old absolute paths under the folder it has now, so a moved
  run resumes to the same best checkpoint. (State from another run's checkpoint, ckpt_path=..., whose
  best file is not in this folder, is not loaded: best tracking starts afresh.) The folder may be
  an fsspec URL (`checkpoint_dir=s3://...`): paths inside it are kept relative the same way.
- `LastCheckpoint`: ModelCheckpoint(save_last=True) rewrites last.ckpt only when it saves a
  monitored checkpoint, so after an epoch that did not improve, last.ckpt is older than the run.
  This callback writes last.ckpt after every epoch (after its validation, or at the epoch's end
  when it has none), at every step checkpoint (callbacks.checkpoint.every_n_train_steps) and when
  training ends, through the Trainer's writer (atomic, with a digest). It is a Lightning
  `Checkpoint`, which Lightning runs after every other callback and after the ModelCheckpoints
  listed before it, so what it saves includes their updates of that step (EMA weights, the best
  checkpoint just chosen).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint, ModelCheckpoint
from pytorch_lightning.trainer.states import TrainerFn

from bigtrain.training.checkpoint_files import child, exists, is_url

LAST = "last.ckpt"
PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")


def _absolute(path: str) -> bool:
    """An absolute local path, or a URL."""
    return os.path.isabs(path) or is_url(path)


def relative(path: str, root: str) -> str:
    """`path` relative to `root` (a local folder or a URL) when it lies inside it, else unchanged."""
    if is_url(root) or is_url(path):
        inside = path.startswith(root.rstrip("/") + "/")
        return path[len(root.rstrip("/")) + 1 :] if path and inside else path
    if path and os.path.isabs(path) and (path == root or path.startswith(root.rstrip(os.sep) + os.sep)):
        return os.path.relpath(path, root)
    return path


def rerooted(path: str, old_root: str | None, root: str) -> str:
    """A saved path under the folder the callback has now: relative ones, and absolute ones that
    were inside the folder the checkpoint was written from."""
    if not path:
        return path
    if not _absolute(path):
        return str(child(root, path)) if is_url(root) else os.path.normpath(os.path.join(root, path))
    if old_root and _absolute(old_root):
        inside = relative(path, old_root)
        if not _absolute(inside):
            return rerooted(inside, None, root)
    return path


class RunModelCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose saved state survives a moved or copied run directory."""

    @property
    def state_key(self) -> str:
        # Lightning's own key for these settings: the state in checkpoints of earlier runs loads.
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        root = str(self.dirpath)
        state.update({k: relative(state[k], root) for k in PATH_KEYS if k in state})
        state["best_k_models"] = {relative(p, root): v for p, v in state.get("best_k_models", {}).items()}
        state["dirpath"] = "."
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old, root = state_dict.get("dirpath"), str(self.dirpath)
        state = dict(state_dict)
        state.update({k: rerooted(state.get(k, ""), old, root) for k in PATH_KEYS if k in state})
        state["best_k_models"] = {
            rerooted(p, old, root): v for p, v in state_dict.get("best_k_models", {}).items()
        }
        best = state.get("best_model_path", "")
        if best and not exists(best):
            return  # another run's state (ckpt_path=...): this run tracks its own best
        state["dirpath"] = self.dirpath
        super().load_state_dict(state)


def checkpoint_callbacks(c: Any, ckpt_dir: str | Path) -> list[pl.Callback]:
    """The run's checkpoint callbacks from `callbacks.checkpoint` (`c`): the monitored best
    first (it is the Trainer's `checkpoint_callback`), the step checkpoint, last.ckpt.
    `ckpt_dir` is a local folder or an fsspec URL (Lightning's ModelCheckpoint takes both).

    last.ckpt is LastCheckpoint's alone: ModelCheckpoint's own save_last would write it only with
    a new best, and a second writer of the name would make it last-v1.ckpt."""
    out: list[pl.Callback] = [
        RunModelCheckpoint(
            dirpath=ckpt_dir,
            filename="epoch{epoch:03d}-step{step:06d}",
            auto_insert_metric_name=False,
            monitor=c.monitor,
            mode=c.mode,
            save_last=False,
            save_top_k=c.save_top_k,
        )
    ]
    if c.every_n_train_steps:
        # Mid-epoch checkpoints for resume; the latest one is kept (monitor=None, top 1).
        out.append(
            RunModelCheckpoint(
                dirpath=ckpt_dir,
                filename="step{step:06d}",
                auto_insert_metric_name=False,
                every_n_train_steps=c.every_n_train_steps,
                save_top_k=1,
            )
        )
    if c.save_last:
        out.append(LastCheckpoint(ckpt_dir, c.every_n_train_steps))
    return out


class LastCheckpoint(Checkpoint):
    """last.ckpt: the newest state of the run (see the module docstring for when it is written)."""

    def __init__(self, dirpath: str | Path, every_n_train_steps: int | None = None) -> None:
        self.path = child(dirpath, LAST)
        self.every = every_n_train_steps or 0
        self.saved: tuple[int, str] | None = None  # (global step, hook) of the latest save

    def save(self, trainer: pl.Trainer, hook: str) -> None:
        trainer.save_checkpoint(self.path)
        self.saved = (trainer.global_step, hook)

    @staticmethod
    def fitting(trainer: pl.Trainer) -> bool:
        return (
            trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking and not trainer.fast_dev_run
        )

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        # The same steps as the step ModelCheckpoint (once per optimizer step, not per micro-batch).
        due = self.every and step and step % self.every == 0
        if due and (self.saved is None or self.saved[0] != step) and self.fitting(trainer):
            self.save(trainer, "batch")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Always after validation, even at a step already saved before it: a checkpoint of the last
        # batch of an epoch resumes without that epoch's validation (Lightning skips it).
        if self.fitting(trainer):
            self.save(trainer, "validation")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.fitting(trainer) and self.saved != (trainer.global_step, "validation"):
            self.save(trainer, "epoch")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.fitting(trainer) and (self.saved is None or self.saved[0] != trainer.global_step):
            self.save(trainer, "end")
