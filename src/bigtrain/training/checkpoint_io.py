"""The CheckpointIO plugin the Trainer gets: Lightning writes and reads every checkpoint through
training/checkpoint_files.py (atomic saves with a digest file, weights-only loads that check it),
in a local folder or at an fsspec URL (`checkpoint_dir=s3://...`, `memory://...`)."""

from __future__ import annotations

from typing import Any

from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from bigtrain.training.checkpoint_files import digest_path, load_checkpoint_file, remove_file, save_atomic


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with atomic writes, digests and weights-only loading."""

    def __init__(self, trust: bool = False) -> None:
        super().__init__()
        self.trust = trust

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any = None) -> None:
        # Where a checkpoint goes and how is the URL's alone (fsspec's configuration for it).
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        save_atomic(checkpoint, path)

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None) -> dict:
        # The run's trust setting decides, whatever a caller inside Lightning asks for.
        return load_checkpoint_file(path, map_location=map_location or "cpu", trust=self.trust, verify=True)

    def remove_checkpoint(self, path) -> None:
        """The checkpoint and its digest file (ModelCheckpoint removes checkpoints it no longer keeps),
        local or remote."""
        super().remove_checkpoint(path)
        remove_file(digest_path(path))
