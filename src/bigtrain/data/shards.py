"""A token corpus on disk, read without loading it: shards as memmaps and the window starts of a split.

A corpus is a folder written by `bigtrain-tokens write` (data/shard_writer.py):
    index.json          {format, version, dtype, vocab_size, tokenizer, eod, n_tokens, n_bytes,
                         documents, shards: [{file, tokens, documents}], sources: [...], ...}
    shard-00000.bin     token ids, flat (uint8 for bytes, uint16 up to 65536 ids, else uint32)
    shard-00000.docs    uint64 little-endian: the end offset (exclusive) of each document in it
    tokenizer.json      a copy of the tokenizer (absent for byte tokens)
Every document ends with the end-of-document token `eod` and lies whole in one shard. A corpus of
the older single-file layout (`<name>.bin` + `<name>.json`, no document ends) reads as one shard.

The token stream (shards in order) splits contiguously into [train | val | test] by fractions. A
window is seq_len + 1 consecutive tokens inside one shard and one split; with documents="within"
also inside one document (a window ends at the document's end-of-document token at the latest).
The valid starts of a split are kept as runs (shard, first start, count), so a uniform draw over
the split's starts is a search in the runs' cumulative counts. numpy and JSON only.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bigtrain.config.errors import ConfigError, first_line
from bigtrain.data.corpus import split_bounds

INDEX = "index.json"
FORMAT = "bigtrain-tokens"
VERSION = 2
SHARD_NAME = re.compile(r"shard-\d{5}\.bin")
DTYPES = ("uint8", "uint16", "uint32")
FIX = "write the corpus again with bigtrain-tokens write"


def is_folder_corpus(path: str) -> bool:
    """Whether `path` names a corpus folder (the folder or its index.json)."""
    p = Path(path)
    return p.is_dir() or p.name == INDEX


def corpus_folder(path: str) -> Path:
    """The folder of a corpus named by its folder or its index.json."""
    p = Path(path)
    return p.parent if p.name == INDEX else p


def token_dtype_for(vocab: int) -> np.dtype:
    """The smallest unsigned storage for ids below `vocab`."""
    return np.dtype(np.uint8 if vocab <= 256 else np.uint16 if vocab <= 65536 else np.uint32)


def read_index(path: str) -> dict:
    """The checked index of a corpus folder: ConfigError naming the file and the fix otherwise.
    Every shard it names must exist with exactly its tokens' bytes (one stat each, no read)."""
    folder = corpus_folder(path)
    index_path = folder / INDEX
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        reason = first_line(e)
        raise ConfigError(f"{index_path} cannot be read as a token corpus's index ({reason}): {FIX}") from e
    problem = _index_problem(index)
    if problem is not None:
        raise ConfigError(f"{index_path} is not a token corpus's index ({problem}): {FIX}")
    itemsize = np.dtype(index["dtype"]).itemsize
    for shard in index["shards"]:
        for name, size in ((shard["file"], shard["tokens"] * itemsize), (_docs_name(shard["file"]), shard["documents"] * 8)):  # fmt: skip
            try:
                actual = (folder / name).stat().st_size
            except OSError:
                raise ConfigError(f"{folder / name} is missing: {FIX}") from None
            if actual != size:
                raise ConfigError(
                    f"{folder / name} has {actual} bytes, its index says {size}: it is truncated or of "
                    f"another corpus; {FIX}"
                )
    if index["tokenizer"] is not None and not (folder / index["tokenizer"]).is_file():
        raise ConfigError(f"{folder / index['tokenizer']} is missing: {FIX}")
    return index


def _docs_name(shard_file: str) -> str:
    """shard-NNNNN.bin -> shard-NNNNN.docs (its document ends)."""
    return shard_file[: -len(".bin")] + ".docs"


def _count(value: object, least: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _index_problem(index: object) -> str | None:
    """What is wrong with an index's own fields, or None."""
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        return f'no "format": "{FORMAT}"'
    if index.get("version") != VERSION:
        return f"version {index.get('version')!r}; this bigtrain reads version {VERSION}"
    if index.get("dtype") not in DTYPES:
        return f"dtype={index.get('dtype')!r} is not one of {', '.join(DTYPES)}"
    for key in ("vocab_size", "n_tokens", "n_bytes", "documents", "eod"):
        if not _count(index.get(key), 1 if key == "vocab_size" else 0):
            return f"{key}={index.get(key)!r} is not a count"
    if index["eod"] >= index["vocab_size"]:
        return f"eod={index['eod']} is outside the vocabulary of {index['vocab_size']}"
    if index.get("tokenizer") not in (None, "tokenizer.json"):
        return "tokenizer must be null or tokenizer.json"
    shards = index.get("shards")
    if not isinstance(shards, list) or not shards:
        return "no shards"
    for shard in shards:
        if not isinstance(shard, dict) or not SHARD_NAME.fullmatch(str(shard.get("file"))):
            return f"shard {shard!r} is not a shard-NNNNN.bin entry"
        if not (_count(shard.get("tokens")) and _count(shard.get("documents"))):
            return f"shard {shard['file']} has no token or document count"
    if sum(s["tokens"] for s in shards) != index["n_tokens"]:
        return "the shards' tokens do not add up to n_tokens"
    return None


def token_path_base(path: str) -> str:
    """A single-file corpus's name without .bin / .json."""
    for ext in (".json", ".bin"):
        if path.endswith(ext):
            return path[: -len(ext)]
    return path


SINGLE_FILE_FIX = "write the corpus again with bigtrain-tokens write, or restore both files from a copy"


def read_meta(path: str) -> dict:
    """The metadata of a token corpus (`<name>.json`), checked: an object with dtype, vocab_size,
    n_tokens, n_bytes and tokenizer, whose `<name>.bin` holds n_tokens tokens of dtype exactly
    (one stat, no read). ConfigError naming the file otherwise."""
    base = token_path_base(path)
    meta_path = Path(base + ".json")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # not UTF-8 and not JSON are ValueErrors
        reason = first_line(e)
        raise ConfigError(
            f"{meta_path} cannot be read as a token corpus's metadata ({reason}): {SINGLE_FILE_FIX}"
        ) from e
    problem = _meta_problem(meta)
    if problem is not None:
        raise ConfigError(f"{meta_path} is not a token corpus's metadata ({problem}): {SINGLE_FILE_FIX}")
    bin_path = Path(base + ".bin")
    if bin_path.is_file():
        size, itemsize = bin_path.stat().st_size, np.dtype(meta["dtype"]).itemsize
        if size != meta["n_tokens"] * itemsize:
            raise ConfigError(
                f"{bin_path} has {size} bytes but {meta_path.name} says {meta['n_tokens']} {meta['dtype']} "
                f"tokens ({meta['n_tokens'] * itemsize} bytes): it is truncated or of another corpus; "
                f"{SINGLE_FILE_FIX}"
            )
    return meta


def _meta_problem(meta: object) -> str | None:
    """What is wrong with a token corpus's metadata, or None."""
    if not isinstance(meta, dict):
        return f"a JSON {type(meta).__name__}, not an object"
    missing = [k for k in ("dtype", "vocab_size", "n_tokens", "n_bytes", "tokenizer") if k not in meta]
    if missing:
        return f"no {', '.join(missing)}"
    for key in ("vocab_size", "n_tokens", "n_bytes"):
        value = meta[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < (1 if key == "vocab_size" else 0):
            return f"{key}={value!r} is not a count"
    if meta["dtype"] not in ("uint8", "uint16", "uint32", "int32", "int64"):
        return f"dtype={meta['dtype']!r} is not an integer type"
    if meta["tokenizer"] is not None and not isinstance(meta["tokenizer"], str):
        return f"tokenizer={meta['tokenizer']!r} is neither null nor a file"
    return None


def corpus_sources(d: Any) -> tuple[list[str], list[float]]:
    """(paths, weights) of a data=tokens section: data.path with weight 1, or data.sources."""
    if d.sources:
        return [p for p, _ in d.sources], [w for _, w in d.sources]
    return [d.path], [1.0]


def corpus_meta(path: str) -> dict:
    """{dtype, vocab_size, n_tokens, n_bytes, tokenizer (a file or None), eod (or None)} of either
    layout, checked; `tokenizer` is the file to load."""
    if is_folder_corpus(path):
        index = read_index(path)
        tok = None if index["tokenizer"] is None else str(corpus_folder(path) / index["tokenizer"])
        return {**index, "tokenizer": tok}
    return {**read_meta(path), "eod": None}


def open_corpora(paths: list[str]) -> list[Corpus]:
    """The corpora of a run, once the process may open all their shards together."""
    metas = [corpus_meta(p) for p in paths]
    open_files_for(sum(len(m.get("shards", [None])) for m in metas))
    return [Corpus(p, m) for p, m in zip(paths, metas, strict=True)]


def open_files_for(shards: int) -> None:
    """Each shard's memmap holds an open file: raise this process's soft limit on open files
    toward its hard limit when the run's shards need it, or refuse with one line."""
    import resource

    need = shards + 256  # and the rest of the process: libraries, sockets, logs
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    if hard == resource.RLIM_INFINITY or hard >= need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
        return
    raise ConfigError(
        f"the corpora have {shards:,} shards, more than this process may open (ulimit -n: {hard}): raise the "
        "limit, or write the corpus again with a larger --shard-tokens"
    )


@dataclass(frozen=True)
class Runs:
    """Valid window starts of one split: run i holds starts first[i] .. first[i] + count[i] - 1 of
    shard[i]; `ends` is the cumulative count (a uniform draw u < total is run searchsorted(ends, u))."""

    shard: np.ndarray
    first: np.ndarray
    count: np.ndarray
    ends: np.ndarray

    @property
    def total(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def locate(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard, start) of draws u in [0, total)."""
        r = np.searchsorted(self.ends, u, side="right")
        return self.shard[r], self.first[r] + (u - (self.ends[r] - self.count[r]))


class Corpus:
    """Shards as read-only memmaps, the split bounds, and (lazily) the document ends."""

    def __init__(self, path: str, meta: dict | None = None) -> None:
        self.path = path
        self.meta = corpus_meta(path) if meta is None else meta
        dtype = np.dtype(self.meta["dtype"])
        if is_folder_corpus(path):
            folder = corpus_folder(path)
            entries = self.meta["shards"]
            files = [folder / s["file"] for s in entries]
            self._docs_files: list[Path] | None = [folder / _docs_name(s["file"]) for s in entries]
            sizes = [s["tokens"] for s in entries]
        else:
            files, sizes, self._docs_files = (
                [Path(token_path_base(path) + ".bin")],
                [self.meta["n_tokens"]],
                None,
            )
        # Plain ndarrays over the maps (each keeps its map open): cheaper to index than a memmap.
        self.shards = [np.asarray(np.memmap(f, dtype=dtype, mode="r", shape=(n,))) if n else np.zeros(0, dtype) for f, n in zip(files, sizes, strict=True)]  # fmt: skip
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.n_tokens = int(self.offsets[-1])

    @property
    def has_documents(self) -> bool:
        return self._docs_files is not None

    def document_ends(self, i: int) -> np.ndarray:
        """End offsets (exclusive) of shard i's documents."""
        assert self._docs_files is not None
        return np.fromfile(self._docs_files[i], dtype="<u8").astype(np.int64)

    def bounds(self, val: float, test: float) -> dict[str, tuple[int, int]]:
        return split_bounds(self.n_tokens, val, test)

    def segments(self, lo: int, hi: int) -> list[tuple[int, int, int]]:
        """(shard, local lo, local hi) of global token range [lo, hi), shard by shard."""
        out = []
        for i in range(len(self.shards)):
            a, b = max(lo, int(self.offsets[i])), min(hi, int(self.offsets[i + 1]))
            if a < b:
                out.append((i, a - int(self.offsets[i]), b - int(self.offsets[i])))
        return out

    def runs(self, lo: int, hi: int, seq_len: int, within_documents: bool) -> Runs:
        """The valid window starts of global range [lo, hi)."""
        shard, first, count = [], [], []
        for i, a, b in self.segments(lo, hi):
            if within_documents:
                ends = self.document_ends(i)
                starts = np.concatenate([[0], ends[:-1]])
                s, e = np.maximum(starts, a), np.minimum(ends, b)
            else:
                s, e = np.array([a]), np.array([b])
            n = e - s - seq_len
            keep = n > 0
            shard.append(np.full(int(keep.sum()), i))
            first.append(s[keep])
            count.append(n[keep])
        cat = (
            (lambda xs: np.concatenate(xs).astype(np.int64)) if shard else (lambda xs: np.zeros(0, np.int64))
        )
        count_all = cat(count)
        return Runs(cat(shard), cat(first), count_all, np.cumsum(count_all))

    def gather(self, shard: np.ndarray, start: np.ndarray, length: int) -> np.ndarray:
        """(len(start), length) int64 windows. Short windows of one shard: one fancy-index gather
        (about twice a slice per window at 129 tokens); otherwise a slice per window from the
        shards (one 1025-token window in 1 us; grouping by shard costs more)."""
        if len(self.shards) == 1 and length <= 256:
            return self.shards[0][start[:, None] + np.arange(length)].astype(np.int64)
        out = np.empty((len(start), length), dtype=np.int64)
        for j, (i, a) in enumerate(zip(shard.tolist(), start.tolist(), strict=True)):
            out[j] = self.shards[i][a : a + length]
        return out


def tokenizer_digest(meta: dict) -> str | None:
    """What identifies a corpus's tokenizer: the SHA-256 of its file (None for bytes)."""
    if meta["tokenizer"] is None:
        return None
    import hashlib

    try:
        return hashlib.sha256(Path(meta["tokenizer"]).read_bytes()).hexdigest()
    except OSError:
        return f"missing:{os.fspath(meta['tokenizer'])}"
