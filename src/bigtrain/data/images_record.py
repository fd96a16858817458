"""Class folders of images as a data source (data/source.py): the folder layout and every
image's header probed with Pillow before the run (an unreadable file or a decompression bomb is
named, nothing is decoded); classes and split sizes from the listing. Its data module:
data/images.py."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bigtrain.config import SPLITS, ImageFolderDataConfig, RunConfig
from bigtrain.config.errors import first_line
from bigtrain.data.source import DataSpec, Source

EXTENSIONS = frozenset({".png", ".jpg", ".jpeg"})


def split_folders(cfg: ImageFolderDataConfig) -> dict[str, Path] | None:
    """{'train': root/train, 'val': ..., 'test': ...} when the root is split by folders."""
    root = Path(cfg.root)
    return {s: root / s for s in SPLITS} if (root / "train").is_dir() else None


def class_names(cfg: ImageFolderDataConfig) -> list[str]:
    """The class folders (of root/train when split by folders), sorted: class index order."""
    folders = split_folders(cfg)
    top = folders["train"] if folders else Path(cfg.root)
    return sorted(e.name for e in os.scandir(top) if e.is_dir() and not e.name.startswith("."))


def image_spec(d: ImageFolderDataConfig) -> DataSpec:
    """Shape from the config and classes from folder names: no image is opened."""
    n = len(class_names(d))
    return DataSpec((d.channels, d.image_size, d.image_size), n, "binary" if n == 2 else "multiclass")


def class_counts(folder: str | Path) -> list[int]:
    """Image files per class folder of `folder`, in class order (listed, never opened)."""
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    return [
        sum(1 for e in os.scandir(os.path.join(folder, c)) if Path(e.name).suffix.lower() in EXTENSIONS)
        for c in classes
    ]


def stratified_train_size(counts: list[int], val: float, test: float, seed: int) -> int | None:
    """Training samples of data/sklearn.split over classes of `counts` samples; None when it
    cannot be split (too few per class: the data module's setup says so)."""
    from sklearn.model_selection import train_test_split

    labels = [i for i, n in enumerate(counts) for _ in range(n)]
    try:
        rest, _ = train_test_split(labels, test_size=test, stratify=labels, random_state=seed)
        train, _ = train_test_split(rest, test_size=val / (1.0 - test), stratify=rest, random_state=seed)
    except ValueError:
        return None
    return len(train)


def _train_samples(cfg: Any) -> int | None:
    d = cfg.data
    if d.root is None:
        return None
    train = os.path.join(d.root, "train")
    if os.path.isdir(train):
        return sum(class_counts(train))
    return stratified_train_size(class_counts(d.root), d.val_fraction, d.test_fraction, cfg.seed)


def check_image_folder(cfg: RunConfig) -> Iterator[str]:
    """The root folder and its class folders; per-channel mean and std."""
    d = cfg.data
    problems = list(_image_root(d))
    yield from problems or _image_files(d)
    for key, values in (("mean", d.mean), ("std", d.std)):
        if values is not None and len(values) != d.channels:
            yield f"data.{key} needs {d.channels} values (one per channel); got {len(values)}"


def _image_root(d: ImageFolderDataConfig) -> Iterator[str]:
    if d.root is None:
        yield "data=image_folder needs a folder: set data.root=DIR (class folders inside)"
        return
    if not os.path.isdir(d.root):
        yield f"data.root={d.root} is not a folder: give the folder that holds the class folders"
        return
    folders = [d.root]
    if os.path.isdir(os.path.join(d.root, "train")):
        missing = [s for s in SPLITS if not os.path.isdir(os.path.join(d.root, s))]
        if missing:
            yield (
                f"data.root={d.root} has a train/ folder but no {'/, '.join(missing)}/: add it, "
                "or put the class folders directly in data.root to split by fractions"
            )
            return
        folders = [os.path.join(d.root, s) for s in SPLITS]
    for folder in folders:
        classes = [e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")]
        if len(classes) < 2:
            yield f"{folder} holds {len(classes)} class folder(s): image_folder needs at least 2 (root/<class>/*.png)"


def _image_files(d: ImageFolderDataConfig) -> Iterator[str]:
    """Every class folder of the training images holds images, every split some; each image's
    header is read (the first unreadable one is named). Needs a valid layout (_image_root)."""
    root = Path(d.root)
    split = (root / "train").is_dir()
    for folder in [root / s for s in SPLITS] if split else [root]:
        classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
        count = 0
        for name in classes:
            files = sorted(p for p in (folder / name).glob("*") if p.suffix.lower() in EXTENSIONS)
            if not files and (folder.name == "train" or not split):
                yield (
                    f"class folder {folder / name} holds no .png/.jpg images: add images, or remove the "
                    "folder (it would be a class without samples)"
                )
                return
            count += len(files)
            for path in files:
                if (line := probe_image(path)) is not None:
                    yield line
                    return
        if not count:
            yield f"{folder} holds no .png/.jpg images: the {folder.name} split needs some"
            return


def probe_image(path: Path) -> str | None:
    """What is wrong with an image file, from its header and Pillow's integrity check (no pixel
    is decoded): None when it is readable and within Pillow's decompression-bomb limit."""
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as im:
                im.verify()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            size = str(e).split(", could")[0]
            return f"image {path} is too large to decode safely ({size}): shrink it or remove it"
        except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError... for broken files
            reason = first_line(e)
            return f"cannot read image {path}: {reason}; remove or replace the file"
    return None


def image_listing(d: Any) -> dict:
    """The listing entry of an image folder: every image's path below `root` and size, sorted."""
    root = d.root
    rows = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if Path(name).suffix.lower() in EXTENSIONS:
                path = Path(folder) / name
                rows.append((path.relative_to(root).as_posix(), path.stat().st_size))
    rows.sort()
    text = "".join(f"{rel}\t{size}\n" for rel, size in rows)
    sha = hashlib.sha256(text.encode()).hexdigest()
    total = sum(s for _, s in rows)
    return {"what": "data.root", "path": str(root), "files": len(rows), "bytes": total, "sha256": sha}


SOURCE = Source(
    name="images",
    choices={"image_folder": "image"},
    module="bigtrain.data.images",
    spec=lambda cfg: image_spec(cfg.data),
    checks=(check_image_folder,),
    train_samples=_train_samples,
    listing=image_listing,
    new_data_keys=("root",),
)
