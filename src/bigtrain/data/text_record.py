"""Text as a data source (data/source.py): `text` (your files, folders or globs) and
`stdlib_text` (the running Python's standard library), tokenised as bytes or by a tokenizers JSON
file. Its checks: the files and the tokenizer, then, for byte tokens, a window in every split
counted from the files' sizes. Files and splits: data/corpus.py; tokens: data/codec.py; its data
module: data/text.py."""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from bigtrain.config import RunConfig, files_in
from bigtrain.data.source import Source


def check_text_files(cfg: RunConfig) -> Iterator[str]:
    """data=text: every path names a file, folder or glob that matches."""
    d = cfg.data
    if d.name != "text":
        return
    if not d.paths:
        yield "data=text needs input files: set data.paths=[file.txt,folder/,'docs/*.md']"
    for p in d.paths:
        if not (os.path.exists(p) or glob.glob(p, recursive=True)):
            yield f"data.paths: {p} matches no file: give existing files, folders or globs"


def check_tokenizer(cfg: RunConfig) -> Iterator[str]:
    """data.tokenizer: the tokenizers package and a JSON file."""
    d = cfg.data
    if d.tokenizer is None:
        return
    if importlib.util.find_spec("tokenizers") is None:
        yield "data.tokenizer needs the tokenizers package: pip install 'bigtrain[text]'"
    if os.path.isdir(d.tokenizer):
        yield (
            f"data.tokenizer={d.tokenizer} is a directory, not a file: give a tokenizers JSON file"
            + files_in(d.tokenizer, [".json"])
        )
    elif not os.path.isfile(d.tokenizer):
        yield f"data.tokenizer={d.tokenizer} does not exist: give a tokenizers JSON file"


def check_corpus_size(cfg: RunConfig) -> Iterator[str]:
    """A text corpus holds a window in every split and one global batch of training windows:
    counted from the files' sizes for byte tokens (with a tokenizer only an empty corpus is
    known now; the data module counts the tokens). A dry run reads no data: its plan is made for
    any corpus."""
    from bigtrain.data.corpus import byte_windows, expand_paths, window_problems

    d = cfg.data
    if cfg.dry_run:
        return
    if d.name == "stdlib_text":
        # The standard library's source is tens of MB: only a data.max_bytes can make it small.
        if d.tokenizer is None and d.max_bytes is not None:
            yield from window_problems(d, byte_windows(d, [], total=d.max_bytes))
        return
    files = expand_paths(list(d.paths))
    if d.tokenizer is None:
        yield from window_problems(d, byte_windows(d, files))
    elif not any(f.stat().st_size for f in files):
        yield f"the files of data.paths={list(d.paths)} are empty: add text"


def stdlib_listing(data: Any) -> dict | None:
    """The listing entry of data=stdlib_text: the bytes the run reads (data/corpus.read_text);
    None for data=text (its files are fingerprinted one by one)."""
    if data.name != "stdlib_text":
        return None
    import sysconfig

    from bigtrain.data.corpus import iter_stdlib_files, read_text

    files = []

    def counted() -> Iterable[Path]:
        for f in iter_stdlib_files():
            yield f
            files.append(f)  # counted once read_text asks for the next one: it has read this one

    text = read_text(counted(), data.max_bytes)
    sha = hashlib.sha256(text).hexdigest()
    where = sysconfig.get_paths()["stdlib"]
    return {"what": "data=stdlib_text", "path": where, "files": len(files), "bytes": len(text), "sha256": sha}


def text_files(data: Any) -> list[Path]:
    """The files the run reads, and its tokenizer file: data=text's files (data.max_bytes may
    stop before the last ones); none of the standard library's (its listing stands for them)."""
    from bigtrain.data.codec import SEPARATOR
    from bigtrain.data.corpus import expand_paths

    out, total = [], 0
    for f in expand_paths(list(data.paths)) if data.name == "text" else []:
        if data.max_bytes is not None and total >= data.max_bytes:
            break
        out.append(f)
        total += f.stat().st_size + len(SEPARATOR)
    return out + ([Path(data.tokenizer)] if data.tokenizer else [])


def _spec(cfg: Any):
    from bigtrain.data.codec import lm_spec

    return lm_spec(cfg.data)


SOURCE = Source(
    name="text",
    choices={"text": "tokens", "stdlib_text": "tokens"},
    module="bigtrain.data.text",
    spec=_spec,
    checks=(check_text_files, check_tokenizer, check_corpus_size),
    files=text_files,
    listing=stdlib_listing,
    new_data_keys=("paths",),
)
