"""Benchmarks bigtrain against a bare Lightning module and a hand-written PyTorch loop, side by side.

    python scripts/bench.py --cases mlp transformer --reps 5      # the training cases
    python scripts/bench.py --cases transformer-peer startup tail memory --reps 5
    python scripts/bench.py --cases cli loader --json bench.json

Training cases (each repeat is a fresh process in which the competitors take turns epoch by
epoch, see bench_cases.py; a ratio is taken per round, between epochs a few seconds apart):
  mlp          the default run (digits MLP, AdamW, cosine schedule, the five classification
               metrics updated every step and computed every epoch; loss, gradient norm and
               learning rate logged every log_every_n_steps to a CSV file): bigtrain, a bare
               LightningModule doing the same work, and a hand-written loop.
               Target: bigtrain / bare <= 1.05. bigtrain / hand-written is reported.
  transformer  gpt/tiny on the standard library's source as bytes (16 windows of 128 tokens a
               step, AdamW, cosine), with the same logging: bigtrain and a hand-written loop.
               Target: bigtrain / hand-written <= 1.03.
  transformer-peer
               gpt_stdlib's shape (4 layers x 128, 4 heads, 16 x 128 tokens a step, AdamW, clipping
               1.0): bigtrain against a plain PyTorch GPT and loop written the way nanoGPT writes
               them, from the same initial weights and windows (bench_peer.py).
               Target: bigtrain / peer <= 1.00 in seconds per step (as many tokens/s or more).
Whole runs (bench_runs.py), `--reps` fresh processes each:
  startup      launch to the first optimizer step of `bigtrain +experiment=gpt_stdlib`, in
               seconds (target <= 3.5) and as a ratio to `python -c "import torch"`.
  tail         the same runs' last optimizer step to exit, in seconds (target <= 2.0).
  peers        the same run against a minimal Lightning script and a hand-written loop training
               the same GPT (startup_peers.py), fresh processes in rotating order, in whatever
               install runs the bench (the README's user install: `pip install -e .`): launch to
               first step (bigtrain / Lightning script <= 1.3), tail, the tail beyond the
               validation and test batches (bigtrain <= 1.0 s), peak RSS (<= 1.15) and
               tokens/s (bigtrain / hand loop >= 0.98); `--threads` sets OMP_NUM_THREADS.
  memory       the plan's memory against the measured peak for gpt/125m (both vocabularies) and
               a 25M-parameter LLaMA shape (lm_memory.py). Target: within 10%.
Other cases:
  loader       tokens/s of the token-file loader (data=tokens) and of a plain numpy gather.
Corpora (bench_corpus.py), run when named:
  tokenize     MB/s of bigtrain-tokens write (1 and 2 workers) against datasets.map(num_proc=2)
               writing one memmap as nanoGPT's prepare step does. Target: >= 1.0.
  shards       training tokens/s from 16 shards against one file. Target: >= 0.98.
  cli          wall time of the default run (`bigtrain`, launch to exit; README quotes it), of
               `bigtrain --help`, of an invalid override and of two dry runs.

Times are seconds per optimizer step over training batches only, after warm-up rounds. Per
ratio the report gives the median of the repeats' medians, their min-max, and the median and
interquartile range of all epoch pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

TITLES = {
    "mlp": "digits MLP (default run)",
    "transformer": "tiny Transformer (gpt/tiny, bytes)",
    "transformer-peer": "gpt_stdlib shape vs nanoGPT's way",
}
# case: {ratio: target or None (reported)}
RATIOS: dict[str, dict[str, float | None]] = {
    "mlp": {"bigtrain/bare": 1.05, "bigtrain/hand": None, "bare/hand": None},
    "transformer": {"bigtrain/hand": 1.03},
    # Seconds per step: <= 1.00 is bigtrain at least as many tokens/s as the peer.
    "transformer-peer": {"bigtrain/peer": 1.00},
}
# case: (rounds, warm-up rounds) unless --rounds / --warmup say otherwise
ROUNDS = {"mlp": (40, 2), "transformer": (12, 1), "transformer-peer": (12, 1)}
# name: (arguments, the exit status they must end with)
CLI_CASES = {
    # README's first command, launch to exit (each run in its own outputs/default/<time>/)
    "the default run (`bigtrain`)": ([], 0),
    "--help": (["--help"], 0),
    "invalid override": (["optim.lr=-1"], 2),
    "dry_run (default run)": (["dry_run=true", "callbacks.print_config=false"], 0),
    "dry_run (+experiment=llama_7b)": (
        ["+experiment=llama_7b", "dry_run=true", "callbacks.print_config=false"],
        0,
    ),
}


def quiet() -> None:
    """Silence the libraries' warnings (bench_cases silences Lightning's loggers)."""
    warnings.filterwarnings("ignore")


# --------------------------------------------------------------------------- training cases


def rep_in_child(
    case: str, rounds: int, extra: list[str], workdir: Path, threads: int | None
) -> dict[str, list[float]]:
    """One repeat of a training case in a fresh Python process: each competitor's epoch times."""
    out = workdir / f"rep{time.monotonic_ns()}.json"
    spec = {"case": case, "rounds": rounds, "extra": extra, "workdir": str(out.with_suffix(""))}
    spec["threads"] = threads
    cmd = [sys.executable, __file__, "--one-rep", json.dumps(spec), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench: a {case} repeat failed:\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def rep_in_process(
    case: str, rounds: int, extra: list[str], workdir: Path, threads: int | None
) -> dict[str, list[float]]:
    """One repeat of a training case in this process (--same-process: quicker, for smoke tests)."""
    from bench_cases import run_rep

    return run_rep(case, rounds, extra, workdir / f"rep{time.monotonic_ns()}", threads)


def spread(values: list[float]) -> dict:
    """Median, min, max and interquartile range of `values`."""
    qs = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "iqr": [qs[0], qs[2]],
    }


def summarize(case: str, reps: list[dict[str, list[float]]], warmup: int) -> dict:
    """A training case's row: per-competitor times and each ratio over repeats and epoch pairs."""
    timed = [{k: v[warmup:] for k, v in rep.items()} for rep in reps]
    names = list(timed[0])
    seconds = {n: statistics.median(t for rep in timed for t in rep[n]) for n in names}
    ratios = {}
    for key, target in RATIOS[case].items():
        num, den = key.split("/")
        per_pair = [[a / b for a, b in zip(rep[num], rep[den], strict=True)] for rep in timed]
        rep_medians = [statistics.median(p) for p in per_pair]
        pairs = spread([r for p in per_pair for r in p])
        ratios[key] = {
            **spread(rep_medians),
            "reps": rep_medians,
            "pairs": {"n": sum(map(len, per_pair)), **pairs},
            "target": target,
        }
    # Per-pair differences, in seconds per step: what one side costs on top of another.
    diffs = {}
    for a, b in (("bigtrain", "bare"), ("bare", "hand"), ("bigtrain", "hand"), ("bigtrain", "peer")):
        if a in names and b in names:
            diffs[f"{a}-{b}"] = statistics.median(
                x - y for rep in timed for x, y in zip(rep[a], rep[b], strict=True)
            )
    return {
        "case": case,
        "title": TITLES[case],
        "unit": "s/step",
        "reps": len(reps),
        "rounds": len(reps[0][names[0]]),
        "warmup_rounds": warmup,
        "seconds": seconds,
        "differences": diffs,
        "ratios": ratios,
    }


def training_row(case: str, args: argparse.Namespace, workdir: Path) -> dict:
    """Run a training case's repeats, each in its own process, and summarize them."""
    rounds, warmup = ROUNDS[case]
    rounds = args.rounds or rounds
    warmup = warmup if args.warmup is None else args.warmup
    if rounds <= warmup:
        raise SystemExit(f"bench: --rounds ({rounds}) must be larger than --warmup ({warmup})")
    extra = [f"trainer.limit_train_batches={args.steps}"] if args.steps else []
    if case.startswith("transformer"):
        extra.append(f"data.max_bytes={args.max_bytes}")
    run = rep_in_process if args.same_process else rep_in_child
    reps = [run(case, rounds, extra, workdir, args.threads) for _ in range(args.reps)]
    row = summarize(case, reps, warmup)
    if case == "transformer-peer":
        row["tokens_per_step"] = 16 * 128  # gpt_stdlib: data.batch_size x data.seq_len
    return row


# --------------------------------------------------------------------------- loader and CLI cases


def loader_tokens_per_s(workdir: Path, seq_len: int, batch: int, steps: int = 400) -> tuple[float, float]:
    """(bigtrain's RandomWindowLoader, a plain numpy gather) in tokens/s over a real token file."""
    import numpy as np
    import torch

    from bigtrain.data.shards import Corpus
    from bigtrain.data.windows import RandomWindowLoader

    path = workdir / "tokens.bin"
    if not path.exists():  # the single-file layout: ids and their metadata
        np.random.default_rng(0).integers(0, 50257, size=16_000_000, dtype=np.uint16).tofile(path)
        meta = {
            "dtype": "uint16",
            "vocab_size": 50257,
            "n_tokens": 16_000_000,
            "n_bytes": 0,
            "tokenizer": None,
        }
        path.with_suffix(".json").write_text(json.dumps(meta))
    corpus = Corpus(str(path))
    tokens = corpus.shards[0]
    runs = corpus.runs(0, len(tokens), seq_len, within_documents=False)
    loader = RandomWindowLoader([(corpus, runs)], [1.0], seq_len, batch, steps, seed=1, epoch=lambda: 0)
    start, n = time.perf_counter(), 0
    for (x,) in loader:
        n += x.numel()
    ours = n / (time.perf_counter() - start)
    offsets, rng = np.arange(seq_len + 1), np.random.default_rng(1)
    start, n = time.perf_counter(), 0
    for _ in range(steps):
        starts = rng.integers(0, len(tokens) - seq_len, size=batch)
        n += torch.from_numpy(tokens[starts[:, None] + offsets].astype(np.int64)).numel()
    return ours, n / (time.perf_counter() - start)


def loader_rows(reps: int, workdir: Path) -> list[dict]:
    """The loader case: median tokens/s of each side over `reps` passes."""
    rows = []
    for seq_len, batch in ((128, 16), (1024, 8)):
        got = [loader_tokens_per_s(workdir, seq_len, batch) for _ in range(reps)]
        rows.append(
            {
                "case": f"token loader, {batch} x {seq_len + 1} tokens",
                "unit": "tokens/s",
                "bigtrain": statistics.median(g[0] for g in got),
                "plain": statistics.median(g[1] for g in got),
            }
        )
    return rows


def cli_seconds(args: list[str], cwd: Path, expect: int) -> float:
    """Wall time of `bigtrain ARGS` in a fresh process, which must exit with `expect`."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bigtrain", *args], cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != expect:
        raise SystemExit(f"bench: `bigtrain {' '.join(args)}` exited {proc.returncode}: {proc.stderr[-500:]}")
    return seconds


def cli_rows(reps: int, workdir: Path) -> list[dict]:
    """The CLI case: median wall time of each command over `reps` runs."""
    return [
        {
            "case": f"CLI {name}",
            "unit": "s",
            "bigtrain": statistics.median(cli_seconds(a, workdir, e) for _ in range(reps)),
        }
        for name, (a, e) in CLI_CASES.items()
    ]


# --------------------------------------------------------------------------- report


def training_markdown(train: list[dict]) -> list[str]:
    """The training cases' ratios, then their times per step (and tokens/s where known)."""
    out = ["| case | ratio | target | median of repeats | repeats min-max | epoch pairs: median (IQR) |"]
    out += ["|---|---|---|---|---|---|"]
    for r in train:
        for key, s in r["ratios"].items():
            target = "reported" if s["target"] is None else f"<= {s['target']:.2f}"
            if s["target"] is not None:
                target += ": met" if s["median"] <= s["target"] else ": MISSED"
            p = s["pairs"]
            out.append(
                f"| {r['title']} | {key.replace('/', ' / ')} | {target} | **{s['median']:.3f}** ({r['reps']}) "
                f"| {s['min']:.3f}-{s['max']:.3f} | {p['median']:.3f} ({p['iqr'][0]:.3f}-{p['iqr'][1]:.3f}), {p['n']} pairs |"
            )
    out += ["", "| case | ms/step | difference per step (median of pairs) |", "|---|---|---|"]
    for r in train:
        tokens = r.get("tokens_per_step")
        times = ", ".join(
            f"{n} {s * 1e3:.2f}" + (f" ({tokens / s:,.0f} tokens/s)" if tokens else "")
            for n, s in r["seconds"].items()
        )
        diffs = ", ".join(f"{k.replace('-', ' - ')} {d * 1e3:+.3f} ms" for k, d in r["differences"].items())
        out.append(f"| {r['title']} | {times} | {diffs} |")
    return out


def markdown(rows: list[dict]) -> str:
    """The rows as Markdown tables: training ratios and times, whole runs, memory, the rest."""
    train = [r for r in rows if r["unit"] == "s/step"]
    runs = [r for r in rows if r["case"] in ("startup", "tail")]
    peers = [r for r in rows if r["case"] == "peers"]
    memory = [r for r in rows if r["unit"] == "MiB" and r not in peers]
    corpus = [r for r in rows if r["unit"] in ("MB/s", "tokens/s ratio")]
    other = [r for r in rows if r not in train + runs + memory + peers + corpus]
    out: list[str] = training_markdown(train) if train else []
    if runs:
        from bench_runs import markdown as run_markdown

        out += ["", *run_markdown(runs)]
    if peers:
        from bench_runs import peer_markdown

        out += ["", *peer_markdown(peers)]
    if memory:
        out += ["", "| case | parameters | plan | measured: median (min-max) | measured / plan | target |"]
        out += ["|---|---|---|---|---|---|"]
        for r in memory:
            verdict = "met" if abs(r["ratio"] - 1) <= r["target"] else "MISSED"
            out.append(
                f"| {r['case']} | {r['params'] / 1e6:.1f}M | {r['plan_mib']:.0f} MiB | {r['measured_mib']:.0f} MiB "
                f"({r['measured_min_mib']:.0f}-{r['measured_max_mib']:.0f}) | **{r['ratio']:.3f}** "
                f"| within {r['target']:.0%}: {verdict} |"
            )
    if corpus:
        from bench_corpus import markdown as corpus_markdown

        out += ["", *corpus_markdown(corpus)]
    if other:
        out += ["", "| case | bigtrain | plain |", "|---|---|---|"]
        for r in other:
            if r["unit"] == "tokens/s":
                out.append(
                    f"| {r['case']} | {r['bigtrain'] / 1e6:.0f} M tokens/s | {r['plain'] / 1e6:.0f} M tokens/s |"
                )
            else:
                out.append(f"| {r['case']} | {r['bigtrain']:.2f} s | |")
    return "\n".join(out)


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    choices = [
        "mlp",
        "transformer",
        "transformer-peer",
        "startup",
        "tail",
        "peers",
        "memory",
        "loader",
        "cli",
        "tokenize",
        "shards",
    ]
    # memory builds models of 25M-125M parameters (about 3 GiB): run when named; so are peers,
    # tokenize and shards (minutes each)
    named = ("memory", "peers", "tokenize", "shards")
    parser.add_argument("--cases", nargs="+", default=[c for c in choices if c not in named], choices=choices)
    parser.add_argument("--reps", type=int, default=5, help="repeats (fresh processes) per training case")
    parser.add_argument(
        "--rounds", type=int, help="epochs per competitor and repeat (mlp 40, transformer 12)"
    )
    parser.add_argument("--warmup", type=int, help="rounds not timed (mlp 2, transformer 1)")
    parser.add_argument(
        "--steps", type=int, default=0, help="training batches per epoch (0: the whole epoch)"
    )
    parser.add_argument("--max-bytes", type=int, default=100_000, help="text bytes of the transformer case")
    parser.add_argument("--threads", type=int, help="torch threads of every competitor (default: torch's)")
    parser.add_argument(
        "--same-process", action="store_true", help="run the repeats in this process (smoke tests)"
    )
    parser.add_argument("--run-steps", type=int, default=87, help="optimizer steps of the startup/tail run")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    # Internal: one repeat of a training case (see rep_in_child), written as JSON to a file.
    parser.add_argument("--one-rep", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    """Run the chosen cases and print their tables (and write JSON with --json)."""
    args = parse_args()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    quiet()
    if args.one_rep:
        from bench_cases import run_rep

        spec, out = json.loads(args.one_rep[0]), Path(args.one_rep[1])
        times = run_rep(spec["case"], spec["rounds"], spec["extra"], Path(spec["workdir"]), spec["threads"])
        out.write_text(json.dumps(times))
        return
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for case in ("mlp", "transformer", "transformer-peer"):
            if case in args.cases:
                rows.append(training_row(case, args, work))
                print(markdown(rows[-1:]) + "\n", flush=True)
        whole = [c for c in ("startup", "tail") if c in args.cases]
        if whole:
            from bench_runs import markdown as run_markdown
            from bench_runs import measure
            from bench_runs import rows as run_rows

            rows += run_rows(measure(args.reps, work, args.run_steps), whole)
            print("\n".join(run_markdown(rows[-len(whole) :])) + "\n", flush=True)
        if "peers" in args.cases:
            from bench_runs import measure_peers, peer_markdown, peer_rows

            rows += peer_rows(measure_peers(args.reps, work, args.run_steps, args.threads))
            print("\n".join(peer_markdown([r for r in rows if r["case"] == "peers"])) + "\n", flush=True)
        if "memory" in args.cases:
            from lm_memory import memory_rows

            rows += memory_rows(args.reps)
        if "loader" in args.cases:
            rows += loader_rows(args.reps, work)
        if "cli" in args.cases:
            rows += cli_rows(args.reps, work)
        if "tokenize" in args.cases or "shards" in args.cases:
            import bench_corpus

            if "tokenize" in args.cases:
                rows += bench_corpus.tokenize_rows(args.reps, work)
            if "shards" in args.cases:
                rows += bench_corpus.shard_rows(args.reps, work)
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
