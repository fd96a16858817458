"""Which files a text corpus reads and how its token stream splits into windows, without torch.

data/text.py (the data module) and the config check of `data=text` (data/text_record.py) share these,
so a corpus too small for one window or one global batch is refused at validation, before a run
directory exists, with the same words as the data module would use. With byte tokens (no
tokenizer) the token count is the byte count, known from the file sizes without reading them.
"""

from __future__ import annotations

import glob
import os
import sysconfig
from collections.abc import Iterable, Iterator
from pathlib import Path

from bigtrain.data.codec import SEPARATOR


def expand_paths(paths: list[str]) -> list[Path]:
    """Files named directly, every file under a folder, and glob matches; sorted, no repeats."""
    out: list[Path] = []
    for p in paths:
        if os.path.isdir(p):
            out += sorted(q for q in Path(p).rglob("*") if q.is_file())
        elif os.path.isfile(p):
            out.append(Path(p))
        else:
            out += sorted(Path(q) for q in glob.glob(p, recursive=True) if os.path.isfile(q))
    return list(dict.fromkeys(out))


def stdlib_files() -> list[Path]:
    """The .py files of the running interpreter's standard library (no installed packages), in
    sorted order."""
    return list(iter_stdlib_files())


def iter_stdlib_files(folder: Path | None = None) -> Iterator[Path]:
    """stdlib_files one by one, in the same order (each folder's entries sorted by name, files
    and folders alike, is the order of sorted paths), so that a reader that needs only the first
    megabytes stops early instead of listing the whole library first."""
    folder = Path(sysconfig.get_paths()["stdlib"]) if folder is None else folder
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if entry.name not in ("site-packages", "dist-packages"):
                yield from iter_stdlib_files(Path(entry.path))
        elif entry.name.endswith(".py") and entry.is_file():
            yield Path(entry.path)


def read_text(files: Iterable[Path], max_bytes: int | None) -> bytes:
    """The files joined by a blank line, stopping at `max_bytes`."""
    parts, total = [], 0
    for f in files:
        if max_bytes is not None and total >= max_bytes:
            break
        chunk = f.read_bytes() + SEPARATOR
        parts.append(chunk)
        total += len(chunk)
    data = b"".join(parts)
    return data if max_bytes is None else data[:max_bytes]


def split_bounds(n: int, val: float, test: float) -> dict[str, tuple[int, int]]:
    """Contiguous [train | val | test] token ranges."""
    n_test, n_val = int(n * test), int(n * val)
    n_train = n - n_val - n_test
    return {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}


def window_count(tokens: int, seq_len: int) -> int:
    """Non-overlapping windows of seq_len + 1 tokens in `tokens` tokens (data/text.windows)."""
    return max(0, (tokens - 1) // seq_len)


def window_problems(cfg, windows: dict[str, int]) -> Iterator[str]:
    """The data module's errors for these window counts per split: one line each."""
    for split_name, n in windows.items():
        if n == 0:
            yield (
                f"the {split_name} split of data={cfg.name} has no window of {cfg.seq_len + 1} tokens: "
                "add text (data.max_bytes, data.paths) or lower data.seq_len"
            )
            return
    if windows["train"] < cfg.batch_size:
        yield (
            f"data={cfg.name} has {windows['train']} training windows, fewer than one global batch "
            f"(data.batch_size={cfg.batch_size}): add text or lower data.batch_size"
        )


def byte_windows(cfg, files: list[Path], total: int | None = None) -> dict[str, int]:
    """Windows per split of byte tokens: the files' sizes joined by SEPARATOR (or `total` bytes),
    capped at data.max_bytes, as data/text.read_text reads them."""
    if total is None:
        total = sum(f.stat().st_size + len(SEPARATOR) for f in files)
    if cfg.max_bytes is not None:
        total = min(total, cfg.max_bytes)
    bounds = split_bounds(total, cfg.val_fraction, cfg.test_fraction)
    return {k: window_count(b - a, cfg.seq_len) for k, (a, b) in bounds.items()}
