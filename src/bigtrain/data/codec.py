"""Token codecs and the spec of language-model data: numpy and JSON only, so that validation and
`dry_run=true` know the vocabulary without importing torch's data stack or Lightning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bigtrain.config import ConfigError
from bigtrain.data.source import DataSpec

BYTE_VOCAB = 256
SEPARATOR = b"\n\n"


class Codec:
    """Text <-> token ids: bytes by default, or a tokenizers JSON file."""

    def __init__(self, tokenizer: str | None = None) -> None:
        self.tokenizer_path = tokenizer
        self._tok = None
        if tokenizer is not None:
            try:
                from tokenizers import Tokenizer
            except ImportError as e:  # validation checks this first; kept for library use
                raise ConfigError(
                    "data.tokenizer needs the tokenizers package: pip install 'bigtrain[text]'"
                ) from e
            self._tok = Tokenizer.from_file(tokenizer)

    @property
    def vocab_size(self) -> int:
        return BYTE_VOCAB if self._tok is None else self._tok.get_vocab_size()

    @property
    def byte_level(self) -> bool:
        return self._tok is None

    def encode(self, data: bytes) -> np.ndarray:
        if self._tok is None:
            return np.frombuffer(data, dtype=np.uint8)
        ids = self._tok.encode(data.decode("utf-8", errors="replace")).ids
        return np.asarray(ids, dtype=np.int64)

    def decode(self, ids: list[int]) -> str:
        if self._tok is None:
            return bytes(int(i) % BYTE_VOCAB for i in ids).decode("utf-8", errors="replace")
        return self._tok.decode([int(i) for i in ids])


def token_path_base(path: str) -> str:
    for ext in (".json", ".bin"):
        if path.endswith(ext):
            return path[: -len(ext)]
    return path


TOKEN_FIX = "write the corpus again with bigtrain-tokens write, or restore both files from a copy"


def read_meta(path: str) -> dict:
    """The metadata of a token corpus (`<name>.json`), checked: an object with dtype, vocab_size,
    n_tokens, n_bytes and tokenizer, whose `<name>.bin` holds n_tokens tokens of dtype exactly
    (one stat, no read). ConfigError naming the file otherwise."""
    base = token_path_base(path)
    meta_path = Path(base + ".json")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # not UTF-8 and not JSON are ValueErrors
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise ConfigError(
            f"{meta_path} cannot be read as a token corpus's metadata ({reason}): {TOKEN_FIX}"
        ) from e
    problem = _meta_problem(meta)
    if problem is not None:
        raise ConfigError(f"{meta_path} is not a token corpus's metadata ({problem}): {TOKEN_FIX}")
    bin_path = Path(base + ".bin")
    if bin_path.is_file():
        size, itemsize = bin_path.stat().st_size, np.dtype(meta["dtype"]).itemsize
        if size != meta["n_tokens"] * itemsize:
            raise ConfigError(
                f"{bin_path} has {size} bytes but {meta_path.name} says {meta['n_tokens']} {meta['dtype']} "
                f"tokens ({meta['n_tokens'] * itemsize} bytes): it is truncated or of another corpus; "
                f"{TOKEN_FIX}"
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


def lm_spec(cfg) -> DataSpec:
    """The spec of LM data without reading the corpus (a tokens file's metadata at most)."""
    if cfg.name == "tokens":
        meta = read_meta(cfg.path)
        vocab, byte_level = meta["vocab_size"], meta["tokenizer"] is None
    else:
        codec = Codec(cfg.tokenizer)
        vocab, byte_level = codec.vocab_size, codec.byte_level
    return DataSpec(
        input_shape=(cfg.seq_len,),
        num_classes=vocab,
        task="lm",
        vocab_size=vocab,
        seq_len=cfg.seq_len,
        byte_level=byte_level,
    )
