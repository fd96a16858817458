"""A pre-tokenised corpus, or a weighted mixture of them, as a data source (data/source.py), without torch.

Its checks: one of data.path / data.sources; every corpus there (a folder with index.json, or
an older `<base>.bin` + `<base>.json`) with readable metadata; one vocabulary and tokenizer
across a mixture; document ends where data.documents=within. Its steps per epoch and its plan
rows (tokens per source and the epochs each will see) come from the metadata. Its data module:
data/tokens.py; its layout: data/shards.py; its writer: data/shard_writer.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bigtrain.config import ConfigError, RunConfig, files_in
from bigtrain.data.shards import corpus_sources
from bigtrain.data.source import Source


def _one_corpus(path: str) -> str | None:
    """What is missing for `path` to be a corpus, or None."""
    from bigtrain.data.shards import INDEX, is_folder_corpus

    if is_folder_corpus(path):
        folder = Path(path).parent if Path(path).name == INDEX else Path(path)
        if not (folder / INDEX).is_file():
            return f"{folder} has no {INDEX}: give a folder written by bigtrain-tokens write{files_in(str(folder), ['.bin', '.json'])}"
        return None
    base = path[: -len(".json")] if path.endswith(".json") else path.removesuffix(".bin")
    missing = [base + ext for ext in (".bin", ".json") if not os.path.isfile(base + ext)]
    if missing:
        return f"{path}: {missing[0]} not found; write the corpus with bigtrain-tokens write"
    return None


def check_token_files(cfg: RunConfig) -> Iterator[str]:
    """data.path or data.sources (not both), each naming a corpus."""
    d = cfg.data
    if (d.path is None) == (not d.sources):
        yield (
            "data=tokens reads data.path=CORPUS or a mixture data.sources=[{path:A,weight:0.7},{path:B,weight:0.3}]: "
            + ("give one" if d.path is None else "not both (data.path=null for a mixture)")
        )
        return
    for path in corpus_sources(d)[0]:
        problem = _one_corpus(path)
        if problem is not None:
            yield f"data.path={problem}" if d.path is not None else f"data.sources: {problem}"
            return


def check_corpora_agree(cfg: RunConfig) -> Iterator[str]:
    """One vocabulary and tokenizer over a mixture; document ends where windows keep within them."""
    from bigtrain.data.shards import corpus_meta, tokenizer_digest

    paths = corpus_sources(cfg.data)[0]
    try:
        metas = [corpus_meta(p) for p in paths]
    except ConfigError as e:
        yield from e.lines
        return
    first = metas[0]
    for path, meta in zip(paths[1:], metas[1:], strict=True):
        if meta["vocab_size"] != first["vocab_size"] or tokenizer_digest(meta) != tokenizer_digest(first):
            yield (
                f"data.sources: {path} has another vocabulary or tokenizer than {paths[0]}: write every "
                "corpus of a mixture with the same --tokenizer"
            )
            return
    if cfg.data.documents == "within":
        for path, meta in zip(paths, metas, strict=True):
            if meta["eod"] is None:
                yield (
                    f"data.documents=within needs document ends, which {path} (a single-file corpus) does not "
                    "keep: write it again with bigtrain-tokens write, or use data.documents=cross"
                )
                return


def train_tokens(d: Any, sizes: list[int] | None = None) -> list[int]:
    """Tokens in the train split of each source (data/corpus.split_bounds' sizes), from the
    sources' token counts (`sizes`, read from their indexes when not given)."""
    if sizes is None:
        from bigtrain.data.shards import corpus_meta

        sizes = [int(corpus_meta(path)["n_tokens"]) for path in corpus_sources(d)[0]]
    return [n - int(n * d.val_fraction) - int(n * d.test_fraction) for n in sizes]


def steps_per_epoch(d: Any, sizes: list[int] | None = None) -> int:
    """Optimizer steps of an epoch: data.steps_per_epoch, or one pass of the train tokens."""
    if d.steps_per_epoch is not None:
        return d.steps_per_epoch
    return max(1, sum(train_tokens(d, sizes)) // (d.seq_len * d.batch_size))


def plan_sources(cfg: Any, total_steps: int | None) -> list[dict]:
    """Per source: weight, train tokens, tokens it gives over the run and the epochs of it that is."""
    d = cfg.data
    paths, weights = corpus_sources(d)
    total_w = sum(weights)
    rows = []
    for path, w, tokens in zip(paths, weights, train_tokens(d), strict=True):
        drawn = None if total_steps is None else round(total_steps * d.batch_size * d.seq_len * w / total_w)
        rows.append({"path": path, "weight": w / total_w, "train_tokens": tokens, "tokens_drawn": drawn,
                     "epochs": None if drawn is None else drawn / max(1, tokens)})  # fmt: skip
    return rows


def _files(d: Any) -> list[Path]:
    from bigtrain.data.shards import INDEX, corpus_folder, is_folder_corpus, read_index, token_path_base

    out: list[Path] = []
    for path in corpus_sources(d)[0]:
        if is_folder_corpus(path):
            folder = corpus_folder(path)
            index = read_index(path)
            out.append(folder / INDEX)
            for s in index["shards"]:
                out += [folder / s["file"], folder / (s["file"][:-4] + ".docs")]
            if index["tokenizer"] is not None:
                out.append(folder / index["tokenizer"])
        else:
            base = token_path_base(path)
            out += [Path(base + ".bin"), Path(base + ".json")]
    return out


def token_spec(d: Any):
    """The spec of a corpus (or mixture) from the first corpus's metadata."""
    from bigtrain.data.codec import lm_spec
    from bigtrain.data.shards import corpus_meta

    meta = corpus_meta(corpus_sources(d)[0][0])
    return lm_spec(d, meta["vocab_size"], meta["tokenizer"] is None)


def _spec(cfg: Any):
    return token_spec(cfg.data)


SOURCE = Source(
    name="tokens",
    choices={"tokens": "tokens"},
    module="bigtrain.data.tokens",
    spec=_spec,
    checks=(check_token_files, check_corpora_agree),
    steps_per_epoch=steps_per_epoch,
    files=_files,
    new_data_keys=("path", "sources"),
    plan_sources=plan_sources,
)
