"""Training from corpora of shards: window sampling, document-aware windows, weighted mixtures, resume, the plan, `datasets` sources and the older single-file layout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bigtrain.config import ConfigError
from bigtrain.data.shards import Corpus
from bigtrain.data.tokens import TokensDataModule
from bigtrain.data.tokens_cli import main as write_main
from bigtrain.data.windows import STEPS_PER_DRAW, EvalWindowLoader, RandomWindowLoader, eval_windows
from conftest import QUIET, bigtrain_cmd, make_cfg

LM = ["model=gpt/tiny", "metrics=lm", "data=tokens", "data.seq_len=16", "data.batch_size=8"]


def letters(folder: Path, name: str, alphabet: bytes, n_docs: int, seed: int) -> Path:
    """A byte corpus of n_docs documents of 5..200 letters of `alphabet` (files d000.txt ...)."""
    rng = np.random.default_rng(seed)
    src = folder / f"{name}_src"
    src.mkdir()
    for i in range(n_docs):
        doc = bytes(rng.choice(list(alphabet), size=int(rng.integers(5, 200))).tolist())
        (src / f"d{i:03d}.txt").write_bytes(doc)
    write_main(["write", str(folder / name), str(src), "--shard-tokens", "4000"])
    return folder / name


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("corpora")
    return letters(root, "lower", b"abcdefghij", 300, 0), letters(root, "upper", b"KLMNOPQRST", 120, 1)


def _loader(corpus_paths, weights, world=1, accum=1, rank=0, within=False, steps=20, seed=7):
    sources = []
    for p in corpus_paths:
        c = Corpus(str(p))
        lo, hi = c.bounds(0.1, 0.1)["train"]
        sources.append((c, c.runs(lo, hi, 16, within)))
    return RandomWindowLoader(sources, weights, 16, 8, steps, seed=seed, epoch=lambda: 0, rank=rank,
                              world_size=world, accumulation=accum)  # fmt: skip


def test_a_sharded_corpus_gives_windows_inside_one_shard_the_same_on_any_ranks(corpora):
    lower, _ = corpora
    corpus = Corpus(str(lower))
    assert len(corpus.shards) >= 5
    one = torch.cat([b for (b,) in _loader([lower], [1.0])])
    parts = [[b for (b,) in _loader([lower], [1.0], world=2, accum=2, rank=r)] for r in (0, 1)]
    step0 = torch.cat([parts[0][0], parts[1][0], parts[0][1], parts[1][1]])
    assert torch.equal(step0, one[:8])
    loader = _loader([lower], [1.0])
    _, shard, start = loader.draw(0, 0, 20)
    ends = np.array([len(s) for s in corpus.shards])[shard]
    assert np.all(start >= 0) and np.all(start + 17 <= ends)  # every window inside its shard
    assert len(np.unique(shard)) > 1  # drawn from several shards
    for row, i, a in zip(one[:40].numpy(), shard.ravel()[:40], start.ravel()[:40], strict=True):
        assert np.array_equal(np.asarray(corpus.shards[i][a : a + 17]), row)


def test_windows_within_documents_never_cross_an_end_of_document(corpora):
    lower, _ = corpora
    windows = torch.cat([b for (b,) in _loader([lower], [1.0], within=True, steps=50)]).numpy()
    assert not np.any(windows[:, :-1] == 0)  # the end-of-document token (byte 0) only as the last target
    crossing = torch.cat([b for (b,) in _loader([lower], [1.0], within=False, steps=50)]).numpy()
    assert np.any(crossing[:, :-1] == 0)  # the check can fail: streams cross documents
    c = Corpus(str(lower))
    lo, hi = c.bounds(0.1, 0.1)["val"]
    shards, starts = eval_windows(c.runs(lo, hi, 16, True), 16, None)
    rows = next(iter(EvalWindowLoader([(c, shards, starts)], 16, 1000)))[0].numpy()
    assert len(rows) == len(starts) > 10 and not np.any(rows[:, :-1] == 0)


def test_the_open_files_limit_is_checked_for_all_the_runs_shards_together(tmp_path):
    """Each memmap holds a file open: two corpora of 100 shards each fit a limit of 400 open
    files one at a time (100 + 256 for the rest of the process), not together."""
    for name in ("a", "b"):
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(json.dumps({"text": "x" * 120}) + "\n" for _ in range(100))
        )
        write_main(["write", str(tmp_path / name), str(tmp_path / f"{name}.jsonl"), "--shard-tokens", "100"])
    assert len(Corpus(str(tmp_path / "a")).shards) == 100
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (400, 400))\n"
        "from bigtrain.data.shards import open_corpora\n"
        "open_corpora(sys.argv[1:2])\n"
        "print('one fits', flush=True)\n"
        "open_corpora(sys.argv[1:])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "a", "b"], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.stdout == "one fits\n" and proc.returncode == 1
    assert "ConfigError: the corpora have 200 shards, more than this process may open" in proc.stderr


def test_mixture_proportions_hold_within_a_tenth_of_a_point_over_2000_steps(corpora):
    lower, upper = corpora
    for weights in ([0.7, 0.3], [0.25, 0.75]):
        loader = _loader([lower, upper], weights, steps=2000)
        drawn = np.concatenate(
            [loader.draw(0, b, STEPS_PER_DRAW)[0].ravel() for b in range(2000 // STEPS_PER_DRAW)]
        )
        drawn = np.concatenate(
            [drawn, loader.draw(0, 2000 // STEPS_PER_DRAW, 2000 % STEPS_PER_DRAW)[0].ravel()]
        )
        share = np.bincount(drawn, minlength=2) / len(drawn)
        assert len(drawn) == 16000 and np.all(np.abs(share - weights) <= 0.001), (
            share
        )  # within 0.1 points (docs/lm.md)
        for step in (0, 1, 2, 3, 100):  # and per batch of 8: within one window of the weights
            counts = np.bincount(drawn[step * 8 : step * 8 + 8], minlength=2)
            assert np.all(np.abs(counts - 8 * np.asarray(weights)) <= 1.5), counts
    # The windows come from the source drawn: the upper corpus holds only upper-case letters.
    loader = _loader([lower, upper], [0.5, 0.5], steps=4)
    src = loader.draw(0, 0, 4)[0]
    batches = [b for (b,) in loader]
    for step, batch in enumerate(batches):
        rows = batch.numpy()
        upper_rows = ((rows < ord("a")) | (rows == 0)).all(axis=1)  # K..T and end-of-document bytes only
        assert np.array_equal(upper_rows, src[step] == 1)


def test_eval_windows_split_the_cap_by_weight_exactly():
    from bigtrain.data.tokens import shares

    assert shares(16, [0.7, 0.3]) == [11, 5] and sorted(shares(10, [1, 1, 1])) == [3, 3, 4]
    assert all(sum(shares(n, [0.5, 0.3, 0.2])) == n for n in range(1, 40)) and shares(None, [1.0]) == [None]


def test_a_resume_position_is_used_once():
    from bigtrain.data.tensors import TrainPosition

    class Loader:
        state = None

        def load_state_dict(self, state):
            self.state = state

    module = TrainPosition()
    module.load_state_dict({"train_position": {"epoch": 2, "consumed": 5}})
    assert module.resume_loader(Loader()).state == {"epoch": 2, "consumed": 5}
    assert module.resume_loader(Loader()).state is None  # a loader made again later starts afresh


def test_resuming_a_loader_mid_epoch_gives_the_next_batches(corpora):
    lower, upper = corpora
    whole = [b for (b,) in _loader([lower, upper], [0.6, 0.4], accum=2, steps=80)]
    resumed = _loader([lower, upper], [0.6, 0.4], accum=2, steps=80)
    resumed.load_state_dict({"epoch": 0, "consumed": 131})  # mid-block, mid-accumulation
    rest = [b for (b,) in resumed]
    assert len(rest) == len(whole) - 131 and all(
        torch.equal(a, b) for a, b in zip(rest, whole[131:], strict=True)
    )


def test_the_plan_prints_tokens_and_epochs_per_source(corpora, tmp_path):
    lower, upper = corpora
    sources = f"data.sources=[{{path:{lower},weight:0.7}},{{path:{upper},weight:0.3}}]"
    out = bigtrain_cmd(*QUIET, *LM, sources, "trainer.max_steps=500", "dry_run=true", f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    plan = json.loads((tmp_path / "r" / "plan.json").read_text())
    rows = plan["data_sources"]
    assert [r["path"] for r in rows] == [str(lower), str(upper)]
    assert rows[0]["tokens_drawn"] == 500 * 8 * 16 * 0.7 and rows[1]["tokens_drawn"] == 500 * 8 * 16 * 0.3
    train_upper = Corpus(str(upper)).n_tokens - 2 * int(Corpus(str(upper)).n_tokens * 0.01)
    assert rows[1]["train_tokens"] == train_upper and rows[1]["epochs"] == pytest.approx(19200 / train_upper)
    assert "data: upper (30%)" in out.stdout and "epochs" in out.stdout


def test_mixture_and_corpus_mistakes_are_one_line_before_the_run(corpora, tmp_path):
    lower, upper = corpora
    cases = [
        ([f"data.path={lower}", f"data.sources=[{{path:{upper},weight:1}}]"], "not both"),
        ([], "give one"),
        ([f"data.sources=[{{path:{lower},weight:-1}}]"], "must be a number greater than 0"),
        ([f"data.sources=[{{path:{lower}}}]"], "must be a list of {path: CORPUS, weight: W}"),
        ([f"data.sources=[{{path:{lower},weight:1}},{{path:{tmp_path / 'none'},weight:1}}]"], "none"),
    ]
    for extra, says in cases:
        with pytest.raises(ConfigError) as e:
            make_cfg([*LM, *extra])
        assert says in str(e.value) and "\n" not in str(e.value), str(e.value)
    old = _old_corpus(tmp_path)
    with pytest.raises(ConfigError, match="data.documents=within needs document ends"):
        make_cfg([*LM, f"data.path={old}", "data.documents=within"])


def _old_corpus(folder: Path) -> Path:
    """The single-file layout of earlier versions: uint16 ids and their metadata, written here."""
    text = b"".join(p.read_bytes() + b"\n\n" for p in sorted(Path(json.__file__).parent.glob("*.py")))
    np.frombuffer(text, np.uint8).astype(np.uint16).tofile(folder / "old.bin")
    meta = {
        "dtype": "uint16",
        "vocab_size": 256,
        "n_tokens": len(text),
        "n_bytes": len(text),
        "tokenizer": None,
    }
    (folder / "old.json").write_text(json.dumps(meta))
    return folder / "old.bin"


def test_the_single_file_layout_reads_as_one_shard_with_the_same_windows(tmp_path):
    old = _old_corpus(tmp_path)
    cfg = make_cfg([*LM, f"data.path={old}", "data.val_fraction=0.1", "data.test_fraction=0.1"])
    dm = TokensDataModule(cfg.data, seed=cfg.seed)
    dm.setup()
    tokens = np.fromfile(old, dtype=np.uint16)
    lo, hi = 0, len(tokens) - 2 * int(len(tokens) * 0.1)
    # The single-file loader's draw: starts lo + integers(0, hi - lo - seq_len) of rng (seed, epoch, block).
    starts = lo + np.random.default_rng([cfg.seed, 0, 0]).integers(0, hi - lo - 16, size=(STEPS_PER_DRAW, 8))
    expected = tokens[starts[0][:, None] + np.arange(17)].astype(np.int64)
    (first,) = next(iter(dm.train_dataloader()))
    assert torch.equal(first, torch.from_numpy(expected))


def test_jsonl_and_parquet_through_datasets_and_a_saved_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    pytest.importorskip("pyarrow")
    docs = [p.read_text(encoding="utf-8")[:400] for p in sorted(Path(json.__file__).parent.glob("*.py"))]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    ds = datasets.Dataset.from_dict({"text": docs})
    ds.to_parquet(str(tmp_path / "d.parquet"))
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "saved"))
    write_main(["write", str(tmp_path / "plain"), str(tmp_path / "d.jsonl")])
    write_main(["write", str(tmp_path / "j"), "--hf-format", "json", str(tmp_path / "d.jsonl")])
    write_main(["write", str(tmp_path / "p"), "--hf-format", "parquet", str(tmp_path / "d.parquet")])
    write_main(["write", str(tmp_path / "s"), "--hf-dataset", str(tmp_path / "saved"), "--split", "train"])
    expected = b"".join(d.encode() + b"\0" for d in docs)
    for name in ("plain", "j", "p", "s"):
        corpus = Corpus(str(tmp_path / name))
        assert bytes(np.asarray(corpus.shards[0]).tolist()) == expected, name
        assert corpus.meta["documents"] == len(docs)
    assert not list(tmp_path.glob("*.partial")) and not (tmp_path / "j" / "datasets-cache").exists()


READ_ALL = """
import resource, sys
import numpy as np
from bigtrain.data.shards import Corpus
from bigtrain.data.windows import EvalWindowLoader, RandomWindowLoader, eval_windows

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

corpus = Corpus(sys.argv[1])
lo, hi = corpus.bounds(0.01, 0.01)["train"]
runs = corpus.runs(lo, hi, 1024, False)
shards, starts = eval_windows(runs, 1024, None)
budget = 64 << 20  # the loader's memory budget: a third of the corpus
resource.setrlimit(resource.RLIMIT_DATA, (status("VmData") + budget, resource.RLIM_INFINITY))
anon = status("RssAnon")
total = 0
for (batch,) in EvalWindowLoader([(corpus, shards, starts)], 1024, 64):  # every train token once
    total += int(batch[:, :-1].sum())
train = RandomWindowLoader([(corpus, runs)], [1.0], 1024, 64, 200, seed=0, epoch=lambda: 0)
for (batch,) in train:
    pass
print(corpus.n_tokens, total, status("RssAnon") - anon)
"""


@pytest.mark.slow
def test_a_corpus_larger_than_the_loaders_memory_budget_is_read_through_memmaps(tmp_path):
    import subprocess
    import sys

    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):  # 200 MB of text in 4 files: 4 shards
        (src / f"part{i}.txt").write_bytes(rng.integers(97, 123, size=50_000_000, dtype=np.uint8).tobytes())
    write_main(["write", str(tmp_path / "big"), str(src), "--shard-tokens", "50000000"])
    corpus = Corpus(str(tmp_path / "big"))
    assert len(corpus.shards) == 4 and corpus.n_tokens == 200_000_004
    out = subprocess.run(
        [sys.executable, "-c", READ_ALL, str(tmp_path / "big")], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    n, total, grown = map(int, out.stdout.split())
    lo, hi = corpus.bounds(0.01, 0.01)["train"]
    expected = 0  # windows lie inside one shard: each shard's part of the split, cut into windows
    for i, a, b in corpus.segments(lo, hi):
        windows = (b - a - 1) // 1024
        expected += int(np.asarray(corpus.shards[i][a : a + windows * 1024]).sum(dtype=np.int64))
    assert n == corpus.n_tokens and total == expected  # every token read, once
    assert grown < 48 << 20, grown  # what the process owns grew by less than the budget


def _ddp_run(corpora: tuple[Path, Path]) -> list[str]:
    lower, upper = corpora
    return [
        "model=gpt/tiny", "metrics=lm", "data=tokens", f"data.sources=[{{path:{lower},weight:0.6}},{{path:{upper},weight:0.4}}]",
        "data.seq_len=16", "data.batch_size=8", "data.steps_per_epoch=40", "data.max_eval_windows=16",
        "trainer.max_steps=16", "trainer.accelerator=cpu", "trainer.devices=2", "strategy=ddp",
        "callbacks.checkpoint.every_n_train_steps=4", "logger=csv", "trainer.log_every_n_steps=1",
    ]  # fmt: skip


@pytest.mark.distributed
def test_a_two_rank_mixture_run_killed_mid_epoch_resumes_with_the_same_batches(corpora, tmp_path):
    """SIGKILL to the whole 2-process job after its first mid-epoch checkpoint; `resume=run` must
    end with the weights, and log the losses, of a run that was never interrupted."""
    import csv
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import read_results

    args = _ddp_run(corpora)
    ref = bigtrain_cmd(*args, "hydra.run.dir=ref", cwd=tmp_path, timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR",)}
    proc = subprocess.Popen([sys.executable, "-m", "bigtrain", *args, "hydra.run.dir=run"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    ckpts = tmp_path / "run" / "checkpoints"
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline and not list(ckpts.glob("*step*.ckpt")):
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # both ranks, as a node failure would
    proc.wait()
    saved = [torch.load(p, weights_only=True)["global_step"] for p in ckpts.glob("*step*.ckpt")]
    assert saved and 0 < max(saved) < 16  # killed mid-epoch (40 steps an epoch)
    done = bigtrain_cmd("resume=run", cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = read_results(tmp_path / "run")
    assert results["status"] == "completed" and results["resumed"] >= 1 and results["global_step"] == 16
    ours = torch.load(ckpts / "last.ckpt", weights_only=True)["state_dict"]
    theirs = torch.load(tmp_path / "ref" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)

    def losses(run: Path) -> dict[int, str]:
        rows = csv.DictReader((tmp_path / run / "metrics.csv").open())
        return {int(r["step"]): r["train/loss"] for r in rows if r.get("train/loss")}

    after = {s: v for s, v in losses(Path("run")).items() if s >= max(saved)}
    assert after and all(losses(Path("ref"))[s] == v for s, v in after.items())
