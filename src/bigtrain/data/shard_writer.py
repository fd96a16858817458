"""The corpus writer: documents tokenised by N worker processes into a folder of shards and an index.

The writer reads documents in order (data/documents.py), sends batches of them to worker
processes (each loads the tokenizer once; `--workers 1` is one worker), and appends the ids,
each document followed by the end-of-document token, to the current shard; a shard closes at a
document boundary once it holds `--shard-tokens` tokens. Results come back in submission order,
so the corpus is the same for any number of workers; at most 2 x workers batches are in flight.

Everything is written into `<out>.partial/`. After each shard, its files are fsynced and
`progress.json` records the shards and documents done, with the settings and the inputs'
fingerprints; a write started again with the same inputs and settings resumes after the last
whole shard, any other restarts. The finished corpus (index.json last) is renamed into place; an
existing corpus is replaced only with --overwrite, and only once the new one is complete.
Byte tokens (no tokenizer) use byte 0 as the end-of-document token and need no worker. Its
command line, `bigtrain-tokens write`, is data/tokens_cli.py.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from bigtrain.config.errors import ConfigError
from bigtrain.data.codec import load_tokenizer
from bigtrain.data.documents import Inputs, check_tables, file_sha256, iter_documents, listing
from bigtrain.data.shards import FORMAT, INDEX, VERSION, token_dtype_for
from bigtrain.util import fsync_dir, write_json_atomic

PROGRESS = "progress.json"
EOD_NAMES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "[SEP]")
BATCH_BYTES = 1 << 20  # text per task sent to a worker


class WorkerDied(ConfigError):
    """A tokenising worker died: the whole shards stay for the same command to resume."""


class Encoder:
    """Documents -> (ids with an end-of-document token after each, document lengths)."""

    def __init__(self, tokenizer: str | None, eod: int, dtype: str) -> None:
        self.eod, self.dtype = eod, np.dtype(dtype)
        self.tok = None if tokenizer is None else load_tokenizer(tokenizer)

    def __call__(self, docs: list[str | bytes]) -> tuple[np.ndarray, np.ndarray]:
        if self.tok is None:
            parts = [np.frombuffer(d if isinstance(d, bytes) else d.encode("utf-8"), np.uint8) for d in docs]
        else:
            texts = [d.decode("utf-8", errors="replace") if isinstance(d, bytes) else d for d in docs]
            parts = [np.asarray(e.ids, dtype=self.dtype) for e in self.tok.encode_batch(texts)]
        lengths = np.fromiter((len(p) + 1 for p in parts), dtype=np.int64, count=len(parts))
        out = np.empty(int(lengths.sum()), dtype=self.dtype)
        ends = np.cumsum(lengths)
        for p, end in zip(parts, ends, strict=True):
            out[end - len(p) - 1 : end - 1] = p
        out[ends - 1] = self.eod
        return out, lengths


_worker: Encoder | None = None


def _start_worker(tokenizer: str | None, eod: int, dtype: str) -> None:
    global _worker
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per worker: --workers is the cores used
    _worker = Encoder(tokenizer, eod, dtype)


def _encode(docs: list[str | bytes]) -> tuple[np.ndarray, np.ndarray]:
    assert _worker is not None
    return _worker(docs)


def find_eod(tokenizer: str | None, name: str | None) -> tuple[int, int]:
    """(vocabulary size, end-of-document id) of the tokenizer, or of bytes (256, byte 0)."""
    if tokenizer is None:
        if name is not None:
            raise ConfigError("--eod names a token of a tokenizer: byte tokens end documents with byte 0")
        return 256, 0
    tok = load_tokenizer(tokenizer)
    for candidate in [name] if name is not None else EOD_NAMES:
        eod = tok.token_to_id(candidate)
        if eod is not None:
            return tok.get_vocab_size(), eod
    asked = (
        f"{name!r} is not a token of {tokenizer}"
        if name
        else f"{tokenizer} has none of {', '.join(EOD_NAMES)}"
    )
    raise ConfigError(f"no end-of-document token: {asked}; name one with --eod TOKEN")


def batches(
    docs: Iterator[str | bytes], skip: int, max_bytes: int | None, content
) -> Iterator[tuple[list, int]]:
    """(documents, their bytes of text) after the first `skip` documents, in batches of about
    BATCH_BYTES, stopping at max_bytes of text (the last document cut there); every document's
    UTF-8 bytes, the skipped ones too, go into the hash `content`."""
    batch: list[str | bytes] = []
    sizes: list[int] = []
    size = total = 0
    for n, doc in enumerate(docs):
        if max_bytes is not None and total >= max_bytes:
            break
        raw = doc if isinstance(doc, bytes) else doc.encode("utf-8")
        cut = max_bytes is not None and total + len(raw) > max_bytes
        if cut:
            raw = raw[: max_bytes - total]
            if not isinstance(doc, bytes):  # text is cut at a character boundary
                raw = raw.decode("utf-8", errors="ignore").encode("utf-8")
            doc = raw
        content.update(raw)
        total = max_bytes if cut else total + len(raw)  # a cut document is the last one
        if n < skip:
            continue
        batch.append(doc)
        sizes.append(len(raw))
        size += len(raw)
        if size >= BATCH_BYTES:
            yield batch, np.asarray(sizes, dtype=np.int64)
            batch, sizes, size = [], [], 0
    if batch:
        yield batch, np.asarray(sizes, dtype=np.int64)


def encoded(
    encoder_args: tuple, workers: int, work: Iterator[tuple[list, int]]
) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """(ids, document lengths, text bytes) per batch, in order; byte tokens in this process."""
    if encoder_args[0] is None:
        encode = Encoder(*encoder_args)
        for b, size in work:
            yield (*encode(b), size)
        return
    ctx = multiprocessing.get_context("spawn")  # the caller may hold threads (torch, tokenizers)
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_start_worker, initargs=encoder_args
    ) as pool:
        pending: deque = deque()
        try:
            for b, size in work:
                pending.append((pool.submit(_encode, b), size))
                if len(pending) >= 2 * workers:
                    future, n = pending.popleft()
                    yield (*future.result(), n)
            while pending:
                future, n = pending.popleft()
                yield (*future.result(), n)
        except BrokenProcessPool:
            raise WorkerDied(
                "a tokenising worker died (out of memory, or killed): run the same command again to "
                "resume after the last whole shard, with fewer --workers if memory is short"
            ) from None


class ShardSink:
    """Appends documents to shard-NNNNN.bin / .docs in `folder`; commits each shard durably."""

    def __init__(self, folder: Path, shard_tokens: int, progress: dict) -> None:
        self.folder, self.shard_tokens, self.progress = folder, shard_tokens, progress
        self.bin = None
        self.tokens = 0
        self.ends: list[np.ndarray] = []
        self.pending_docs = self.pending_bytes = 0

    def add(self, ids: np.ndarray, lengths: np.ndarray, doc_bytes: np.ndarray) -> None:
        """Append a batch of documents, closing shards at the document that fills them."""
        ends = np.cumsum(lengths)
        first = 0
        while first < len(lengths):
            # The documents up to the one that brings the shard to shard_tokens (or all of them).
            room = self.shard_tokens - self.tokens
            base = ends[first - 1] if first else 0
            last = min(int(np.searchsorted(ends, base + room, side="left")), len(lengths) - 1)
            self._append(
                ids[base : ends[last]], lengths[first : last + 1], int(doc_bytes[first : last + 1].sum())
            )
            if self.tokens >= self.shard_tokens:
                self.commit()
            first = last + 1

    def _append(self, ids: np.ndarray, lengths: np.ndarray, nbytes: int) -> None:
        if self.bin is None:
            name = f"shard-{len(self.progress['shards']):05d}"
            # Open across many add() calls: closed by commit(), which writes the .docs file whole.
            self.bin = open(self.folder / f"{name}.bin", "wb")  # noqa: SIM115
        self.bin.write(ids.tobytes())
        self.ends.append(self.tokens + np.cumsum(lengths))
        self.tokens += len(ids)
        self.pending_docs += len(lengths)
        self.pending_bytes += nbytes

    def close(self) -> None:
        """Close an open shard file (after an error: the shard is not committed)."""
        if self.bin is not None:
            self.bin.close()
            self.bin = None

    def commit(self) -> None:
        if self.bin is None:
            return
        ends = np.concatenate(self.ends).astype("<u8")
        with open(self.folder / (Path(self.bin.name).stem + ".docs"), "wb") as docs:
            docs.write(ends.tobytes())
            docs.flush()
            os.fsync(docs.fileno())
        self.bin.flush()
        os.fsync(self.bin.fileno())
        self.bin.close()
        p = self.progress
        p["shards"].append({"file": Path(self.bin.name).name, "tokens": self.tokens, "documents": len(ends)})
        p["documents_done"] += self.pending_docs
        p["bytes_done"] += self.pending_bytes
        fsync_dir(self.folder)
        write_json_atomic(self.folder / PROGRESS, p)
        self.bin = None
        self.tokens, self.ends, self.pending_docs, self.pending_bytes = 0, [], 0, 0


def write_corpus(out: Path, inputs: Inputs, *, tokenizer: str | None = None, eod_name: str | None = None,
                 workers: int = 1, shard_tokens: int = 100_000_000, max_bytes: int | None = None,
                 overwrite: bool = False, say=print) -> dict:  # fmt: skip
    """Write the corpus folder `out` from `inputs`; returns its index."""
    partial = out.with_name(out.name + ".partial")
    files = inputs.fingerprint_files()
    check_target(out, partial, files, overwrite)
    check_tables(inputs)
    vocab, eod = find_eod(tokenizer, eod_name)
    dtype = token_dtype_for(vocab).name
    settings = {"tokenizer": _digest(tokenizer), "eod": eod, "dtype": dtype, "shard_tokens": shard_tokens,
                "max_bytes": max_bytes, "text_field": inputs.text_field, "hf_format": inputs.hf_format,
                "split": inputs.split}  # fmt: skip
    sources = listing(files)
    finished = _finished(partial, settings, sources)
    if finished is not None:  # a write that stopped between its index and its rename
        say(f"finishing {partial}: the corpus is complete")
        _put_in_place(partial, out)
        return finished
    progress = _resume_or_restart(partial, settings, sources, say)
    content = hashlib.sha256()
    _tokenise(partial, inputs, (tokenizer, eod, dtype), workers, progress, max_bytes, content, shard_tokens)
    if tokenizer is not None:
        shutil.copyfile(tokenizer, partial / "tokenizer.json")
    index = {
        "format": FORMAT, "version": VERSION, "dtype": dtype, "vocab_size": vocab,
        "tokenizer": None if tokenizer is None else "tokenizer.json", "eod": eod,
        "n_tokens": sum(s["tokens"] for s in progress["shards"]), "n_bytes": progress["bytes_done"],
        "documents": progress["documents_done"], "shards": progress["shards"],
        "sources": {**sources, "text_sha256": content.hexdigest()},
        "settings": settings,
    }  # fmt: skip
    write_json_atomic(partial / INDEX, index)
    (partial / PROGRESS).unlink()
    _put_in_place(partial, out)
    return index


def _tokenise(partial: Path, inputs: Inputs, encoder_args: tuple, workers: int, progress: dict,
              max_bytes: int | None, content, shard_tokens: int) -> None:  # fmt: skip
    """Every document not yet done, tokenised into committed shards in `partial`. On a bad input
    the folder is removed (the corrected input changes the listing, so a write starts again); a
    worker's death keeps the whole shards for the same command to resume."""
    sink = ShardSink(partial, shard_tokens, progress)
    try:
        docs = iter_documents(inputs, partial / "datasets-cache")
        work = batches(docs, progress["documents_done"], max_bytes, content)
        for ids, lengths, nbytes in encoded(encoder_args, max(1, workers), work):
            sink.add(ids, lengths, nbytes)
        sink.commit()
    except WorkerDied:
        raise
    except ConfigError:
        sink.close()
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        sink.close()
    shutil.rmtree(partial / "datasets-cache", ignore_errors=True)
    if not progress["shards"]:
        shutil.rmtree(partial, ignore_errors=True)
        raise ConfigError("no document in the inputs: give files with text, or check --text-field")


def _read_index(folder: Path) -> dict | None:
    """The index of a corpus written by this writer in `folder`, or None."""
    try:
        index = json.loads((folder / INDEX).read_text())
    except (OSError, ValueError):
        return None
    return index if isinstance(index, dict) and index.get("format") == FORMAT else None


def check_target(out: Path, partial: Path, files: list[Path], overwrite: bool) -> None:
    """Refuse, before any work, to write where something that is not this writer's would be lost:
    an existing OUT (without --overwrite, or that is not a corpus), inputs inside OUT, or an
    OUT.partial this writer did not make."""
    if out.exists():
        if not overwrite:
            raise ConfigError(
                f"{out} exists: choose another name, or --overwrite to replace it once the new corpus is complete"
            )
        if not (out.is_dir() and (_read_index(out) is not None or not any(out.iterdir()))):
            raise ConfigError(
                f"{out} is not a corpus written by bigtrain-tokens: --overwrite replaces only a corpus; choose another name"
            )
        inside = [f for f in files if out.resolve() in f.resolve().parents]
        if inside:
            raise ConfigError(
                f"{inside[0]} is inside {out}, which --overwrite would replace: write the corpus elsewhere"
            )
    if partial.exists() and not ((partial / PROGRESS).is_file() or (partial / INDEX).is_file()):
        raise ConfigError(
            f"{partial} is not an unfinished corpus of bigtrain-tokens: move it away, or choose another name"
        )


def _finished(partial: Path, settings: dict, sources: dict) -> dict | None:
    """The index of a complete corpus left in OUT.partial for these inputs and settings, or None."""
    if (partial / PROGRESS).exists():
        return None
    index = _read_index(partial)
    if index is None:
        return None
    ours = {k: v for k, v in index.get("sources", {}).items() if k != "text_sha256"}
    return index if index.get("settings") == settings and ours == sources else None


def _digest(path: str | None) -> str | None:
    return None if path is None else file_sha256(Path(path))


def _resume_or_restart(partial: Path, settings: dict, sources: dict, say) -> dict:
    """The progress of an interrupted write of the same corpus, or a fresh one (any other
    leftover removed). Shard files past the last committed one are removed."""
    fresh = {"settings": settings, "sources": sources, "shards": [], "documents_done": 0, "bytes_done": 0}
    try:
        old = json.loads((partial / PROGRESS).read_text())
    except (OSError, ValueError):
        old = None
    if old is not None and old.get("settings") == settings and old.get("sources") == sources:
        keep = {s["file"] for s in old["shards"]} | {s["file"][:-4] + ".docs" for s in old["shards"]}
        for f in partial.iterdir():
            if f.is_file() and f.name not in keep and f.name != PROGRESS:
                f.unlink()
        say(
            f"resuming {partial}: {len(old['shards'])} shards, {old['documents_done']:,} documents already written"
        )
        return old
    if partial.exists():
        say(f"starting {partial} again: its inputs or settings differ from this write's")
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    return fresh


def _put_in_place(partial: Path, out: Path) -> None:
    """Rename the finished corpus to `out`; an old corpus there is moved aside first, then removed."""
    fsync_dir(partial)
    old = out.with_name(out.name + f".old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    partial.rename(out)
    fsync_dir(out.parent)
    if old.exists():
        shutil.rmtree(old)
