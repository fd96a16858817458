"""Folders of images (root/<class>/*.png|jpg) as an in-memory LightningDataModule.

Every image is decoded once with Pillow, converted to `channels` (L or RGB), resized to
`image_size` x `image_size` with torch's antialiased bilinear interpolation, and kept as uint8:
a 10,000-image folder at 3x32x32 holds 30 MiB. `data.max_memory_mb` (default 4096) bounds it, and
the count is checked before anything is decoded. Larger data sets need a streaming Dataset.

Batches come from the same TensorLoader as the other in-memory data (global batch per optimizer
step, evaluation shards with each image on one rank). Augmentation runs per training batch with
torch ops: random crop after zero padding, horizontal flip, then normalisation by the per-channel
mean and std of the training split (or data.mean / data.std). Evaluation only normalises.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from bigtrain.config import SPLITS, ConfigError, ImageFolderDataConfig
from bigtrain.data.images_record import EXTENSIONS, class_names, image_spec, split_folders
from bigtrain.data.sklearn import SklearnDataModule, split
from bigtrain.data.tensors import TensorLoader


def datamodule(cfg) -> ImageFolderDataModule:
    """The data module of a validated RunConfig whose data is a folder of class folders."""
    return ImageFolderDataModule(cfg.data, seed=cfg.seed)


def list_images(folder: Path, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    files, labels = [], []
    for i, name in enumerate(classes):
        found = sorted(p for p in (folder / name).glob("*") if p.suffix.lower() in EXTENSIONS)
        files += found
        labels += [i] * len(found)
    unknown = sorted(e.name for e in os.scandir(folder) if e.is_dir() and e.name not in classes)
    if unknown:
        raise ConfigError(
            f"{folder}/{unknown[0]} is a class that data.root/train does not have: add it there"
        )
    return files, np.array(labels, dtype=np.int64)


def decode(files: list[Path], cfg: ImageFolderDataConfig) -> torch.Tensor:
    """(N, C, S, S) uint8 images, resized with torch ops."""
    from PIL import Image, UnidentifiedImageError

    size, mode = cfg.image_size, "L" if cfg.channels == 1 else "RGB"
    out = torch.empty((len(files), cfg.channels, size, size), dtype=torch.uint8)
    for i, path in enumerate(files):
        try:
            with Image.open(path) as im:
                pixels = np.array(im.convert(mode), dtype=np.uint8)
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
            # Validation probes every image first (data/images_record.probe_image); a file changed since.
            raise ConfigError(f"cannot read image {path}: {e}; remove or replace the file") from e
        x = torch.from_numpy(pixels.reshape(pixels.shape[0], pixels.shape[1], -1)).permute(2, 0, 1)
        if x.shape[1:] != (size, size):
            x = F.interpolate(
                x[None].float(), (size, size), mode="bilinear", antialias=True, align_corners=False
            )
            x = x[0].round().clamp(0, 255).to(torch.uint8)
        out[i] = x
    return out


def augment(x: torch.Tensor, padding: int, hflip: bool, gen: torch.Generator) -> torch.Tensor:
    """Random crop of each image after zero padding, and a random horizontal flip (p=0.5)."""
    b, _, h, w = x.shape
    if padding:
        padded = F.pad(x, (padding, padding, padding, padding))
        top = torch.randint(0, 2 * padding + 1, (b,), generator=gen)
        left = torch.randint(0, 2 * padding + 1, (b,), generator=gen)
        rows = (top[:, None] + torch.arange(h))[:, :, None]  # (B, H, 1)
        cols = (left[:, None] + torch.arange(w))[:, None, :]  # (B, 1, W)
        # Advanced indices on dims 0, 2, 3 broadcast to (B, H, W) and move first: (B, H, W, C).
        x = padded[torch.arange(b)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    if hflip:
        flip = torch.rand(b, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x


def channel_stats(images: torch.Tensor, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images scaled to [0, 1], summed in float64 chunks so a
    large folder never needs a float copy of itself."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].double() / 255.0
        total += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
    n = images.numel() / images.shape[1]
    mean = total / n
    std = (squares / n - mean * mean).clamp_min(0).sqrt().clamp_min(1e-3)
    return mean.float(), std.float()


class ImageLoader:
    """A TensorLoader of uint8 images that yields normalised float batches, augmented when training."""

    def __init__(self, loader: TensorLoader, mean: torch.Tensor, std: torch.Tensor, augment_cfg=None) -> None:
        self.loader, self.mean, self.std = loader, mean[:, None, None], std[:, None, None]
        self.augment_cfg = augment_cfg  # (padding, hflip, seed, rank) or None

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = None
        if self.augment_cfg is not None:
            padding, hflip, seed, rank = self.augment_cfg
            # Seeded by run seed, epoch and rank: a resumed or repeated run sees the same crops.
            gen = torch.Generator().manual_seed(seed * 1_000_003 + self.loader.epoch() * 1_009 + rank)
        for x, y in self.loader:
            x = x.float() / 255.0
            if gen is not None:
                x = augment(x, padding, hflip, gen)
            yield (x - self.mean) / self.std, y


class ImageFolderDataModule(SklearnDataModule):
    def __init__(self, cfg: ImageFolderDataConfig, seed: int) -> None:
        pl.LightningDataModule.__init__(self)  # the parent's __init__ looks up scikit-learn specs
        self.cfg, self.seed = cfg, seed
        self.classes = class_names(cfg)
        self.spec = image_spec(cfg)
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.mean = self.std = torch.zeros(cfg.channels)

    @property
    def class_names(self) -> list[str] | None:
        """The class folder names, in class index order."""
        return list(self.classes)

    def preprocessing(self) -> dict:
        """What a prediction needs (data/preprocess.py): size, channels, normalisation, classes."""
        c = self.cfg
        return {
            "kind": "image",
            "channels": c.channels,
            "image_size": c.image_size,
            "scale": 1.0,
            "per": "channel",
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "classes": list(self.classes),
        }

    def _files(self) -> dict[str, tuple[list[Path], np.ndarray]]:
        folders = split_folders(self.cfg)
        if folders:
            return {s: list_images(folders[s], self.classes) for s in SPLITS}
        files, labels = list_images(Path(self.cfg.root), self.classes)
        self._check_memory(len(files))
        try:
            idx = split(
                np.arange(len(files)), labels, self.cfg.val_fraction, self.cfg.test_fraction, self.seed
            )
        except ValueError as e:  # too few images per class for a stratified split
            raise ConfigError(
                f"data.root={self.cfg.root} cannot be split by data.val_fraction/test_fraction: {e}"
            ) from e
        return {s: ([files[i] for i in ix], ys) for s, (ix, ys) in idx.items()}

    def _check_memory(self, images: int) -> None:
        cfg = self.cfg
        total = images * cfg.channels * cfg.image_size**2  # uint8: one byte per value
        if total > cfg.max_memory_mb * 2**20:
            raise ConfigError(
                f"data.root={cfg.root} decodes to {total / 2**20:.0f} MiB at data.image_size={cfg.image_size}, "
                f"over data.max_memory_mb={cfg.max_memory_mb}: lower data.image_size or raise data.max_memory_mb"
            )

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        cfg = self.cfg
        parts = self._files()
        for s, (files, _) in parts.items():
            if not files:
                raise ConfigError(f"the {s} split of data.root={cfg.root} has no .png/.jpg images")
        self._check_memory(sum(len(f) for f, _ in parts.values()))
        self.splits = {s: (decode(f, cfg), torch.from_numpy(y)) for s, (f, y) in parts.items()}
        mean, std = channel_stats(self.splits["train"][0])
        self.mean = torch.tensor(cfg.mean) if cfg.mean else mean
        self.std = torch.tensor(cfg.std) if cfg.std else std
        if not cfg.normalize:
            self.mean, self.std = torch.zeros(cfg.channels), torch.ones(cfg.channels)

    def train_dataloader(self) -> ImageLoader:
        rank = self._topology()[0]
        augment_cfg = (self.cfg.crop_padding, self.cfg.hflip, self.seed, rank)
        return ImageLoader(super().train_dataloader(), self.mean, self.std, augment_cfg)

    def val_dataloader(self) -> ImageLoader:
        return ImageLoader(super().val_dataloader(), self.mean, self.std)

    def test_dataloader(self) -> ImageLoader:
        return ImageLoader(super().test_dataloader(), self.mean, self.std)
