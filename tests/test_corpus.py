"""The tokens writer (`bigtrain-tokens write`): inputs of every kind, N workers, shards, resume of an interrupted write, refusals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest

from bigtrain.data.shards import Corpus
from bigtrain.data.tokens_cli import main as write_main

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def bpe(path: Path, vocab: int = 512) -> Path:
    """A byte-level BPE trained here on the json package's source, with <|endoftext|>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>"], show_progress=False)  # fmt: skip
    tok.train([str(p) for p in sorted((STDLIB / "json").glob("*.py"))], trainer)
    tok.save(str(path))
    return path


def texts(n: int, seed: int = 0) -> list[str]:
    """n documents: docstrings of the email package's modules, cut at varied lengths."""
    sources = [p.read_text(encoding="utf-8") for p in sorted((STDLIB / "email").glob("*.py"))]
    rng = np.random.default_rng(seed)
    return [sources[i % len(sources)][: int(rng.integers(50, 3000))] for i in range(n)]


def shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*"))}


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Path:
    pytest.importorskip("tokenizers")
    return bpe(tmp_path_factory.mktemp("tok") / "tok.json")


def test_files_folders_jsonl_parquet_and_arrow_with_one_or_two_workers(tmp_path, tok, capsys):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    docs = texts(60)
    (tmp_path / "notes").mkdir()
    for i, d in enumerate(docs[:10]):
        (tmp_path / "notes" / f"n{i:02d}.txt").write_text(d)
    (tmp_path / "rows.jsonl").write_text(
        "".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs[10:30]))
    )
    table = pa.table({"body": docs[30:50], "n": list(range(20))})
    pq.write_table(table, tmp_path / "rows.parquet", row_group_size=7)
    with pa.ipc.new_file(str(tmp_path / "rows.arrow"), pa.table({"body": docs[50:]}).schema) as w:
        w.write_table(pa.table({"body": docs[50:]}))
    common = ["--tokenizer", str(tok), "--shard-tokens", "3000"]
    write_main(["write", str(tmp_path / "a"), str(tmp_path / "notes"), str(tmp_path / "rows.jsonl"), *common, "--workers", "1"])  # fmt: skip
    write_main(["write", str(tmp_path / "b"), str(tmp_path / "notes"), str(tmp_path / "rows.jsonl"), *common, "--workers", "2"])  # fmt: skip
    write_main(["write", str(tmp_path / "c"), str(tmp_path / "rows.parquet"), str(tmp_path / "rows.arrow"), *common, "--text-field", "body"])  # fmt: skip
    assert "wrote" in capsys.readouterr().out
    assert shard_bytes(tmp_path / "a") == shard_bytes(
        tmp_path / "b"
    )  # any number of workers: the same corpus

    t = Tokenizer.from_file(str(tok))
    eod = t.token_to_id("<|endoftext|>")
    for name, expected in (("a", docs[:30]), ("c", docs[30:])):
        corpus = Corpus(str(tmp_path / name))
        assert corpus.meta["eod"] == eod and corpus.meta["documents"] == len(expected)
        assert len(corpus.shards) > 3 and corpus.meta["dtype"] == "uint16"
        got = []
        for i, shard in enumerate(corpus.shards):
            ends = corpus.document_ends(i)
            assert ends[-1] == len(shard) and np.all(np.asarray(shard)[ends - 1] == eod)  # whole documents
            starts = np.concatenate([[0], ends[:-1]])
            got += [
                t.decode(np.asarray(shard[a : b - 1]).tolist()) for a, b in zip(starts, ends, strict=True)
            ]
        assert got == expected
        assert corpus.meta["n_bytes"] == sum(len(d.encode()) for d in expected)


def test_byte_corpus_and_max_bytes(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"abc" * 100)
    (tmp_path / "b.txt").write_bytes(b"xyz" * 100)
    write_main(["write", str(tmp_path / "c"), str(tmp_path / "*.txt"), "--max-bytes", "450"])
    corpus = Corpus(str(tmp_path / "c"))
    tokens = np.asarray(corpus.shards[0])
    assert corpus.meta["dtype"] == "uint8" and corpus.meta["eod"] == 0 and corpus.meta["n_bytes"] == 450
    assert bytes(tokens.tolist()) == b"abc" * 100 + b"\0" + b"xyz" * 50 + b"\0"


def _write(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bigtrain.data.tokens_cli", "write", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_an_interrupted_write_resumes_and_equals_an_uninterrupted_one(tmp_path, tok):
    args = [
        "--stdlib",
        "--max-bytes",
        "6000000",
        "--tokenizer",
        str(tok),
        "--workers",
        "1",
        "--shard-tokens",
        "100000",
    ]
    ref = _write(["ref", *args], tmp_path)
    assert ref.wait(timeout=300) == 0, ref.stderr.read()
    progress = tmp_path / "out.partial" / "progress.json"
    proc = _write(["out", *args], tmp_path)
    while proc.poll() is None and not (
        progress.exists() and len(json.loads(progress.read_text())["shards"]) >= 2
    ):
        time.sleep(0.01)
    assert proc.poll() is None, "the write ended before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "out").exists()  # nothing half-written under the corpus's name
    again = _write(["out", *args], tmp_path)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "resuming" in out and "shards" in out
    assert shard_bytes(tmp_path / "out") == shard_bytes(tmp_path / "ref")
    index, ref_index = (json.loads((tmp_path / n / "index.json").read_text()) for n in ("out", "ref"))
    assert index == ref_index and not (tmp_path / "out.partial").exists()


def test_a_leftover_of_other_settings_is_started_again(tmp_path):
    (tmp_path / "a.txt").write_text("hello " * 1000)
    partial = tmp_path / "c.partial"
    partial.mkdir()
    (partial / "progress.json").write_text(json.dumps({"settings": {"eod": 5}, "sources": {}, "shards": []}))
    (partial / "shard-00000.bin").write_bytes(b"junk")
    proc = _write(["c", "a.txt"], tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "starting" in out and "again" in out
    assert bytes(np.asarray(Corpus(str(tmp_path / "c")).shards[0]).tolist()) == b"hello " * 1000 + b"\0"


def test_an_existing_corpus_is_kept_unless_overwrite(tmp_path):
    (tmp_path / "a.txt").write_text("first " * 100)
    write_main(["write", str(tmp_path / "c"), str(tmp_path / "a.txt")])
    before = shard_bytes(tmp_path / "c")
    (tmp_path / "a.txt").write_text("second " * 100)
    proc = _write(["c", "a.txt"], tmp_path)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and err.strip().count("\n") == 0 and "--overwrite" in err
    assert shard_bytes(tmp_path / "c") == before
    proc = _write(["c", "a.txt", "--overwrite"], tmp_path)
    assert proc.wait(timeout=120) == 0
    assert bytes(np.asarray(Corpus(str(tmp_path / "c")).shards[0]).tolist()) == b"second " * 100 + b"\0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "c"]


def _numbers_parquet(folder: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [1, 2, 3]}), folder / "n.parquet")


@pytest.mark.parametrize(
    "make, args, says",
    [
        (lambda d: None, ["x.bin", "a.txt"], "a corpus is a folder"),
        (lambda d: None, ["c", "nope.txt"], "nope.txt does not exist"),
        (lambda d: (d / "r.jsonl").write_text('{"body": "x"}\n'), ["c", "r.jsonl"], "no text field 'text'"),
        (
            lambda d: (d / "r.jsonl").write_text("not json\n"),
            ["c", "r.jsonl"],
            "r.jsonl:1 is not a JSON object",
        ),
        (lambda d: None, ["c", "a.txt", "--eod", "<s>"], "byte tokens end documents with byte 0"),
        (lambda d: None, ["c", "a.txt", "--workers", "0"], "must be at least 1"),
        (lambda d: None, ["c", "--hf-dataset", "a.txt"], "not a folder saved by datasets"),
        (lambda d: None, ["c", "a.txt", "--workers", "two"], "invalid int value"),
        (
            lambda d: (d / "t.json").write_text("{}"),
            ["c", "a.txt", "--tokenizer", "t.json"],
            "cannot be read as a tokenizers JSON",
        ),
        (
            lambda d: (d / "r.jsonl").write_bytes(b'{"text": "caf\xe9"}\n'),
            ["c", "r.jsonl"],
            "r.jsonl:1 is not UTF-8",
        ),
        (
            lambda d: (d / "r.jsonl").write_bytes(b'{"text": "a"}\n{"text": "b"}\n{"text": "caf\xe9"}\n'),
            ["c", "r.jsonl"],
            "r.jsonl:3 is not UTF-8",
        ),
        (_numbers_parquet, ["c", "n.parquet"], "holds int64, not text"),
        (lambda d: None, ["c", "a.txt", "--tokenizer", "nope.json"], "--tokenizer nope.json cannot be read"),
        (
            lambda d: (d / "c").mkdir() or (d / "c" / "mine.txt").write_text("keep"),
            ["c", "a.txt", "--overwrite"],
            "is not a corpus written by bigtrain-tokens",
        ),
        (
            lambda d: (d / "c.partial").mkdir(),
            ["c", "a.txt"],
            "is not an unfinished corpus of bigtrain-tokens",
        ),
    ],
)
def test_bad_inputs_are_one_line_and_write_nothing(tmp_path, make, args, says):
    (tmp_path / "a.txt").write_text("some text")
    make(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    proc = _write(args, tmp_path)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bigtrain-tokens: ") and says in lines[0], err
    assert (
        sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    )  # nothing written, nothing lost


def test_a_tokenizer_without_an_end_of_document_token_is_refused(tmp_path, tok):
    from tokenizers import Tokenizer

    plain = Tokenizer.from_file(str(tok))
    data = json.loads(plain.to_str())
    data["added_tokens"] = []
    data["model"]["vocab"].pop("<|endoftext|>")
    (tmp_path / "plain.json").write_text(json.dumps(data))
    (tmp_path / "a.txt").write_text("text")
    proc = _write(["c", "a.txt", "--tokenizer", "plain.json"], tmp_path)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "name one with --eod TOKEN" in err and err.count("\n") == 1
    assert not (tmp_path / "c").exists()


def test_overwrite_never_replaces_a_folder_that_holds_the_inputs(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("text " * 50)
    write_main(["write", str(tmp_path / "corpus"), str(tmp_path / "src")])
    (tmp_path / "corpus" / "notes.txt").write_text("mine")  # a corpus folder that now holds an input
    proc = _write(["corpus", "corpus/notes.txt", "--overwrite"], tmp_path)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "is inside corpus, which --overwrite would replace" in err
    assert (tmp_path / "corpus" / "notes.txt").read_text() == "mine"


def test_a_complete_corpus_left_before_its_rename_is_finished_not_rewritten(tmp_path):
    (tmp_path / "a.txt").write_text("text " * 50)
    write_main(["write", str(tmp_path / "c"), str(tmp_path / "a.txt")])
    (tmp_path / "c").rename(tmp_path / "c.partial")  # as if the process died between index and rename
    before = shard_bytes(tmp_path / "c.partial")
    proc = _write(["c", "a.txt"], tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "finishing" in out, err
    assert shard_bytes(tmp_path / "c") == before and not (tmp_path / "c.partial").exists()


def test_a_bad_row_after_whole_shards_is_one_line_and_leaves_nothing(tmp_path):
    """The corrected input changes the listing, so its write starts again: the shards before a bad
    row are of no use and are removed with the unfinished folder."""
    rows = [json.dumps({"text": f"row {i} " * 1000}) for i in range(300)] + [
        "{broken"
    ]  # 2.4 MB, then a bad row
    (tmp_path / "r.jsonl").write_text("\n".join(rows) + "\n")
    proc = _write(["c", "r.jsonl", "--shard-tokens", "2000"], tmp_path)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "r.jsonl:301 is not a JSON object" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl"]


def test_text_that_spells_the_end_of_document_token_stays_text(tmp_path, tok):
    from tokenizers import Tokenizer

    (tmp_path / "a.txt").write_text("before <|endoftext|> after")
    write_main(["write", str(tmp_path / "c"), str(tmp_path / "a.txt"), "--tokenizer", str(tok)])
    corpus = Corpus(str(tmp_path / "c"))
    ids = np.asarray(corpus.shards[0])
    assert np.flatnonzero(ids == corpus.meta["eod"]).tolist() == [len(ids) - 1]  # only the writer's
    t = Tokenizer.from_file(str(tok))
    assert t.decode(ids[:-1].tolist()) == "before <|endoftext|> after"
