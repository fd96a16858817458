"""Token codecs and the spec of language-model data: numpy and JSON only, so that validation and
`dry_run=true` know the vocabulary without importing torch's data stack or Lightning."""

from __future__ import annotations

import numpy as np

from bigtrain.config import ConfigError
from bigtrain.config.errors import first_line
from bigtrain.data.source import DataSpec

BYTE_VOCAB = 256
SEPARATOR = b"\n\n"


def load_tokenizer(path: str, option: str = "--tokenizer"):
    """The tokenizer of a tokenizers JSON file, whose special tokens spelled in a text are encoded
    as the text they are (only the corpus writer puts end-of-document tokens in, between
    documents); ConfigError in one line, naming `option`, without the package or for a file that
    is not a tokenizer."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ConfigError(f"{option} needs the tokenizers package: pip install 'bigtrain[text]'") from None
    try:
        tok = Tokenizer.from_file(path)
    except Exception as e:  # tokenizers raises a bare Exception for a missing or unparsable file
        raise ConfigError(
            f"{option} {path} cannot be read as a tokenizers JSON file ({first_line(e)})"
        ) from None
    tok.encode_special_tokens = True
    return tok


class Codec:
    """Text <-> token ids: bytes by default, or a tokenizers JSON file."""

    def __init__(self, tokenizer: str | None = None) -> None:
        self.tokenizer_path = tokenizer
        self._tok = None
        if tokenizer is not None:
            self._tok = load_tokenizer(tokenizer, "data.tokenizer")

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


def lm_spec(cfg, vocab: int | None = None, byte_level: bool | None = None) -> DataSpec:
    """The spec of LM data without reading the text: the vocabulary of `data.tokenizer`, or the
    one given (a token corpus's, from its metadata: data/tokens_record.py)."""
    if vocab is None:
        codec = Codec(cfg.tokenizer)
        vocab, byte_level = codec.vocab_size, codec.byte_level
    return DataSpec(
        input_shape=(cfg.seq_len,),
        num_classes=vocab,
        task="lm",
        vocab_size=vocab,
        seq_len=cfg.seq_len,
        byte_level=bool(byte_level),
    )
