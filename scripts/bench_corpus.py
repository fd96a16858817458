"""Benchmarks of language-model corpora: tokenising (bigtrain-tokens vs datasets.map), and reading shards vs one file.

    python scripts/bench.py --cases tokenize shards --reps 5

tokenize  MB of text per second, whole processes launch to exit, in rotating order: `bigtrain-tokens
          write` with 1 and 2 workers, and the same tokenizer driven by `datasets.map(num_proc=2)`
          writing one memmap as nanoGPT's prepare step does (nanogpt_prepare below). The text:
          the standard library's .py files as JSONL rows (one per file, --max-bytes of them); the
          tokenizer: a byte-level BPE of 8,192 tokens trained on the same text. Each tokenizer
          call is one core (TOKENIZERS_PARALLELISM=false everywhere), so workers are cores.
          Target: bigtrain with 2 workers / datasets.map(num_proc=2) >= 1.0 in MB/s.
shards    tokens/s of training from a corpus of 16 shards against the same tokens in one file
          (one shard), gpt/tiny, 16 x 128 tokens a step, fresh `bigtrain` runs alternating, the
          run's own tokens/s (results.json); and the window loader alone on each (bigger, random
          ids). Target: sharded / one file >= 0.98.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ONE_CORE = {"TOKENIZERS_PARALLELISM": "false"}


def nanogpt_prepare(jsonl: str, tokenizer: str, out: str, num_proc: int, cache: str) -> None:
    """The way nanoGPT's data/openwebtext/prepare.py tokenises: datasets.map over the rows with
    num_proc processes (ids + end-of-text per row), then one uint16 memmap filled from
    contiguous shards of the mapped dataset."""
    import datasets
    import numpy as np
    from tokenizers import Tokenizer

    datasets.disable_progress_bars()
    tok = Tokenizer.from_file(tokenizer)
    eot = tok.token_to_id("<|endoftext|>")
    ds = datasets.load_dataset("json", data_files=jsonl, split="train", cache_dir=cache)

    def process(example):
        ids = tok.encode(example["text"]).ids
        ids.append(eot)
        return {"ids": ids, "len": len(ids)}

    tokenized = ds.map(process, remove_columns=["text"], num_proc=num_proc)
    total = int(np.sum(tokenized["len"], dtype=np.uint64))
    arr = np.memmap(out, dtype=np.uint16, mode="w+", shape=(total,))
    batches = min(1024, len(tokenized))
    at = 0
    for i in range(batches):
        part = tokenized.shard(num_shards=batches, index=i, contiguous=True).with_format("numpy")
        ids = np.concatenate(part["ids"])
        arr[at : at + len(ids)] = ids
        at += len(ids)
    arr.flush()


def make_inputs(work: Path, max_bytes: int) -> tuple[Path, Path, int]:
    """(rows.jsonl, tok.json, bytes of text): the standard library as rows, and a BPE of it."""
    sys.path.insert(0, str(REPO / "src"))
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from bigtrain.data.corpus import stdlib_files

    jsonl, tok_path = work / "rows.jsonl", work / "tok.json"
    total = 0
    with open(jsonl, "w", encoding="utf-8") as f:
        for p in stdlib_files():
            text = p.read_text(encoding="utf-8", errors="replace")
            f.write(json.dumps({"text": text}) + "\n")
            total += len(text.encode("utf-8"))
            if total >= max_bytes:
                break
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=8192, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>"], show_progress=False)  # fmt: skip
    tok.train([str(p) for p in stdlib_files()[:200]], trainer)
    tok.save(str(tok_path))
    return jsonl, tok_path, total


def _timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, **ONE_CORE})
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-800:]}")
    return time.perf_counter() - start


def tokenize_rows(reps: int, work: Path, max_bytes: int = 20_000_000) -> list[dict]:
    """The tokenize case: MB/s of each competitor (median over reps) and the ratios to datasets.map."""
    import shutil

    jsonl, tok, nbytes = make_inputs(work, max_bytes)
    writer = [sys.executable, "-m", "bigtrain.data.tokens_cli", "write"]
    competitors = {
        "bigtrain-tokens, 1 worker": lambda out: [*writer, out, str(jsonl), "--tokenizer", str(tok), "--workers", "1"],
        "bigtrain-tokens, 2 workers": lambda out: [*writer, out, str(jsonl), "--tokenizer", str(tok), "--workers", "2"],
        "datasets.map(num_proc=2) + memmap": lambda out: [
            sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import bench_corpus as b; "
            "b.nanogpt_prepare(sys.argv[2], sys.argv[3], sys.argv[4], 2, sys.argv[5])",
            str(Path(__file__).parent), str(jsonl), str(tok), out + ".bin", out + "-cache",
        ],
    }  # fmt: skip
    seconds: dict[str, list[float]] = {k: [] for k in competitors}
    names = list(competitors)
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            out = str(work / f"tok-{len(seconds[name])}-{names.index(name)}")
            seconds[name].append(_timed(competitors[name](out), work))
            for leftover in (out, out + "-cache"):
                shutil.rmtree(leftover, ignore_errors=True)
            Path(out + ".bin").unlink(missing_ok=True)
    peer = statistics.median(seconds[names[2]])
    rows = []
    for name in names:
        med = statistics.median(seconds[name])
        rows.append({"case": f"tokenize: {name}", "unit": "MB/s", "mb_per_s": nbytes / 1e6 / med,
                     "seconds": med, "min": min(seconds[name]), "max": max(seconds[name]),
                     "vs_datasets_map": peer / med, "bytes": nbytes})  # fmt: skip
    return rows


def _write_corpora(work: Path, max_bytes: int) -> tuple[Path, Path]:
    """The standard library as bytes: one corpus of 16 shards, and the same tokens as one shard."""
    sys.path.insert(0, str(REPO / "src"))
    from bigtrain.data.tokens_cli import main as write_main

    one, many = work / "one", work / "many"
    if not one.exists():
        write_main(
            [
                "write",
                str(one),
                "--stdlib",
                "--max-bytes",
                str(max_bytes),
                "--shard-tokens",
                str(10 * max_bytes),
            ]
        )
        write_main(
            [
                "write",
                str(many),
                "--stdlib",
                "--max-bytes",
                str(max_bytes),
                "--shard-tokens",
                str(max_bytes // 16),
            ]
        )
    return one, many


def _run_tokens_per_s(corpus: Path, cwd: Path, n: int) -> float:
    out = cwd / f"run-{corpus.name}-{n}"
    cmd = [sys.executable, "-m", "bigtrain", "model=gpt/tiny", "metrics=lm", "data=tokens", f"data.path={corpus}",
           "data.seq_len=128", "data.batch_size=16", "trainer.max_steps=120", "trainer.enable_progress_bar=false",
           "callbacks.samples.enabled=false", "callbacks.plots=false", f"hydra.run.dir={out}"]  # fmt: skip
    _timed(cmd, cwd)
    return json.loads((out / "results.json").read_text())["throughput"]["tokens_per_s"]


def _loader_tokens_per_s(corpus_path: Path, steps: int = 4000) -> float:
    """Tokens/s of the window loader alone: 4,000 batches (about 50 ms; 600 took 8 ms, and one
    scheduler tick moved the ratio by 0.5)."""
    from bigtrain.data.shards import Corpus
    from bigtrain.data.windows import RandomWindowLoader

    corpus = Corpus(str(corpus_path))
    runs = corpus.runs(0, corpus.n_tokens, 1024, False)
    loader = RandomWindowLoader([(corpus, runs)], [1.0], 1024, 8, steps, seed=1, epoch=lambda: 0)
    start, n = time.perf_counter(), 0
    for (x,) in loader:
        n += x.numel()
    return n / (time.perf_counter() - start)


def _loader_pair(one: Path, many: Path, passes: int = 5) -> tuple[float, float]:
    """Median loader tokens/s of each corpus over `passes` alternating passes."""
    got: dict[Path, list[float]] = {one: [], many: []}
    for k in range(passes):
        for corpus in (one, many) if k % 2 == 0 else (many, one):
            got[corpus].append(_loader_tokens_per_s(corpus))
    return statistics.median(got[one]), statistics.median(got[many])


def shard_rows(reps: int, work: Path, max_bytes: int = 16_000_000) -> list[dict]:
    """The shards case: training tokens/s and loader tokens/s, 16 shards against one file."""
    one, many = _write_corpora(work, max_bytes)
    runs: dict[Path, list[float]] = {one: [], many: []}
    loads: dict[Path, list[float]] = {one: [], many: []}
    for rep in range(reps):
        for corpus in (one, many) if rep % 2 == 0 else (many, one):
            runs[corpus].append(_run_tokens_per_s(corpus, work, rep))
        for corpus, rate in zip((one, many), _loader_pair(one, many), strict=True):
            loads[corpus].append(rate)
    rows = []
    for what, got in (("training (gpt/tiny, 16 x 128)", runs), ("window loader (8 x 1025)", loads)):
        ratios = [m / o for m, o in zip(got[many], got[one], strict=True)]
        rows.append({"case": f"shards: {what}", "unit": "tokens/s ratio", "one_file": statistics.median(got[one]),
                     "sharded": statistics.median(got[many]), "ratio": statistics.median(ratios),
                     "min": min(ratios), "max": max(ratios), "target": 0.98})  # fmt: skip
    return rows


def markdown(rows: list[dict]) -> list[str]:
    out = []
    tok = [r for r in rows if r["unit"] == "MB/s"]
    if tok:
        out += [f"Tokenising {tok[0]['bytes'] / 1e6:.1f} MB of JSONL rows (BPE, 8,192 tokens), whole processes:", "",
                "| competitor | MB/s | seconds: median (min-max) | / datasets.map(num_proc=2) |", "|---|---|---|---|"]  # fmt: skip
        for r in tok:
            out.append(f"| {r['case'][10:]} | {r['mb_per_s']:.2f} | {r['seconds']:.2f} ({r['min']:.2f}-{r['max']:.2f}) "
                       f"| **{r['vs_datasets_map']:.2f}** |")  # fmt: skip
    shard = [r for r in rows if r["unit"] == "tokens/s ratio"]
    if shard:
        out += ["", "| 16 shards vs one file | one file, tokens/s | 16 shards | ratio: median (min-max) | target |",
                "|---|---|---|---|---|"]  # fmt: skip
        for r in shard:
            verdict = "met" if r["ratio"] >= r["target"] else "MISSED"
            out.append(f"| {r['case'][8:]} | {r['one_file']:,.0f} | {r['sharded']:,.0f} | **{r['ratio']:.3f}** "
                       f"({r['min']:.3f}-{r['max']:.3f}) | >= {r['target']}: {verdict} |")  # fmt: skip
    return out
