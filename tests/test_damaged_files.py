"""A received run directory with damaged or changed files, through `bigtrain eval`, `predict`,
`resume=` and `bigtrain.load`: each damage ends in one line naming the file (exit 2, or one
ConfigError line from the API), never a traceback or a silent result; a checkpoint without its
digest file loads with one warning. And the data fingerprints (inputs.json): a data file changed
since training is refused by eval and resume unless accept_changed_data=true.

Two tiny runs (a table and a token corpus, data paths relative to the folder they were made in)
are trained once; each case copies that folder, damages the copy and runs the command in it."""

from __future__ import annotations

import argparse
import collections
import csv
import json
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import bigtrain
from bigtrain.cli import main
from bigtrain.data.tokens_cli import main as tokens_main
from bigtrain.runs.evaluate import evaluate
from bigtrain.runs.fingerprints import check, file_entry, fingerprints, record
from conftest import QUIET, bigtrain_cmd

TABLE = [*QUIET, "+debug=fast", "model=mlp/tiny", "sched=constant", "data=csv", "data.path=table.csv",
         "data.target=label", "data.batch_size=32"]  # fmt: skip
TOKENS = [*QUIET, "+debug=fast", "model=llama/tiny", "metrics=lm", "data=tokens", "data.path=corpus",
          "data.seq_len=32", "data.batch_size=8", "data.val_fraction=0.1", "data.test_fraction=0.1",
          "data.max_eval_windows=16", "callbacks.samples.enabled=false"]  # fmt: skip
ALL = ("eval", "predict", "load", "resume")
COUNTS: collections.Counter = collections.Counter()  # (expected, outcome) over the matrix


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """A folder holding table.csv (300 rows: 210 train, 45 val, 45 test), the corpus folder and
    the finished runs `table` and `tokens` trained on them."""
    root = tmp_path_factory.mktemp("made")
    rng = np.random.default_rng(0)
    with (root / "table.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "c", "label"])
        for x in rng.normal(size=(300, 3)):
            w.writerow([*(f"{v:.4f}" for v in x), "yes" if x.sum() > 0 else "no"])
    (root / "a.txt").write_text("the quick brown fox jumps over the lazy dog. " * 240)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        tokens_main(["write", "corpus", "a.txt"])
        bigtrain.train(TABLE, run_dir=root / "table")
        bigtrain.train(TOKENS, run_dir=root / "tokens")
    return root


def _ckpts(run: Path) -> list[Path]:
    return sorted((run / "checkpoints").glob("*.ckpt"))


def _each_ckpt(change):
    def damage(run: Path) -> None:
        for path in _ckpts(run):
            change(path)

    return damage


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01  # the low bit of one byte: a token stays a byte, a digit stays a digit
    path.write_bytes(bytes(data))


def _pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps({"state_dict": {}, "hparams": argparse.Namespace(lr=0.1)}))
    path.with_name(path.name + ".sha256").unlink()


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _half_the_rows(path: Path) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[: 1 + (len(lines) - 1) // 2]))


# damage -> (run, commands it applies to, expected: error | warning | same (or per command, error
# for the others), the damage)
MATRIX = {
    "ckpt truncated": ("table", ALL, "error", _each_ckpt(_truncate)),
    "ckpt bit-flipped": ("table", ALL, "error", _each_ckpt(lambda p: _flip(p, p.stat().st_size // 2))),
    "ckpt empty": ("table", ALL, "error", _each_ckpt(lambda p: p.write_bytes(b""))),
    "ckpt a pickle": ("table", ALL, "error", _each_ckpt(_pickle)),
    "ckpt without digest": ("table", ALL, "warning", _each_ckpt(lambda p: Path(f"{p}.sha256").unlink())),
    "shard-00000.bin truncated": ("tokens", ("eval", "resume"), "error", lambda r: _truncate(r.parent / SHARD)),
    "shard-00000.bin bit-flipped": ("tokens", ("eval", "resume"), "error",
                                    lambda r: _flip(r.parent / SHARD, (r.parent / SHARD).stat().st_size - 100)),
    "index.json not JSON": ("tokens", ("eval", "resume"), "error", lambda r: (r.parent / INDEX).write_text("{")),
    "index.json without n_bytes": ("tokens", ("eval", "resume"), "error",
                                   lambda r: (r.parent / INDEX).write_text('{"format": "bigtrain-tokens", "version": 2, "dtype": "uint8"}')),
    # A resume writes a new results.json: it names the damaged one in a warning and goes on.
    "results.json a list": ("table", ALL, {"resume": "warning"}, lambda r: (r / "results.json").write_text("[1, 2]")),
    "preprocessing.json not JSON": ("table", ALL, "same", lambda r: (r / "preprocessing.json").write_text("{")),
    "preprocessing.json a list": ("table", ALL, "same", lambda r: (r / "preprocessing.json").write_text("[]")),
    "table.csv half the rows": ("table", ("eval", "resume"), "error", lambda r: _half_the_rows(r.parent / "table.csv")),
    "inputs.json not JSON": ("table", ("eval", "resume"), "error", lambda r: (r / "inputs.json").write_text("[")),
}  # fmt: skip
SHARD, INDEX = "corpus/shard-00000.bin", "corpus/index.json"
NAMES = {"shard-00000.bin": "shard-00000.bin", "index.json": "index.json", "results.json": "results.json",
         "table.csv": "table.csv", "inputs.json": "inputs.json", "preprocessing.json": "preprocessing.json"}  # fmt: skip


def _named(damage: str, command: str, run: Path) -> str:
    """What the one line must name."""
    if damage.startswith("ckpt") and command == "resume":
        # The resume tries every checkpoint (each one named on stdout) and names the folder.
        return "unverified" if damage == "ckpt without digest" else "checkpoints"
    if damage.startswith("ckpt"):
        return Path(_best(run)).name
    if damage == "results.json a list" and command == "resume":
        return "results.json"  # a warning: the resumed run writes a new one
    return NAMES[damage.split()[0]]


def _best(run: Path) -> str:
    return json.loads((run / "results.json").read_text())["best_checkpoint"]


@dataclass
class Outcome:
    code: int | str  # exit code, or "raised" for an exception out of the command
    out: str
    err: str
    value: object = None  # what the command produced: eval's metrics, predict's rows


def _run(command: str, run: Path, capsys) -> Outcome:
    """The command in this process (its entry point, as the executable runs it)."""
    capsys.readouterr()
    code, value = 0, None
    try:
        if command == "load":
            model = bigtrain.load(run)
            value = (
                model.predict("table.csv")
                if model.kind == "table"
                else model.predict("x = ", max_new_tokens=4)
            )
        elif command == "eval":
            main(["eval", str(run)])
        elif command == "predict":
            args = (
                ["table.csv", "--out", "p.csv"] if run.name == "table" else ["x = ", "--max-new-tokens", "4"]
            )
            main(["predict", str(run), *args])
        else:
            main([f"resume={run}", "trainer.max_epochs=2"])
    except SystemExit as e:
        code = e.code
    except bigtrain.ConfigError as e:
        code, value = 2, str(e)
    except Exception as e:  # what the executable would print as a traceback
        code, value = "raised", f"{type(e).__name__}: {e}"
    captured = capsys.readouterr()
    if code == 0 and command == "eval":
        value = json.loads(sorted((run / "evals").glob("*.json"))[-1].read_text())["test"]
    elif code == 0 and command == "predict" and run.name == "table":
        value = Path("p.csv").read_text()
    return Outcome(code, captured.out, captured.err, value)


def _classify(o: Outcome, command: str, named: str) -> str:
    """error (one line naming the file, exit 2), warning (success with one warning line naming
    it), ok (success, nothing said), traceback."""
    if o.code == "raised" or "Traceback" in o.err or "Error executing job" in o.err:
        return "traceback"
    lines = o.err.splitlines() + o.out.splitlines()
    if o.code != 0:
        errors = [s for s in lines if s.startswith("bigtrain: error: ")]
        if command == "load":
            errors = [o.value] if "\n" not in str(o.value) else []
        return "error" if len(errors) == 1 and named in errors[0] else f"exit {o.code}, unclear"
    warned = [s for s in lines if s.startswith(("bigtrain: warning: ", "resume: ")) and named in s]
    return "warning" if len(warned) == 1 else "ok"


@pytest.fixture(scope="module")
def pristine(made, tmp_path_factory) -> dict[str, object]:
    """What eval, predict and load give on undamaged copies (a `same` damage must give it too)."""
    out = {}
    for command in ("eval", "predict", "load"):
        case = tmp_path_factory.mktemp("pristine") / "case"
        shutil.copytree(made, case)
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(case)
            out[command] = _pristine_value(command, case / "table")
    return out


def _pristine_value(command: str, run: Path) -> object:
    if command == "load":
        return bigtrain.load(run).predict("table.csv")
    if command == "eval":
        return evaluate(run)["test"]
    main(["predict", str(run), "table.csv", "--out", "p.csv"])
    return Path("p.csv").read_text()


CELLS = [(d, c) for d, (_, commands, _, _) in MATRIX.items() for c in commands]


@pytest.mark.parametrize(("damage", "command"), CELLS, ids=[f"{d}-{c}" for d, c in CELLS])
def test_damaged_file_matrix(damage, command, made, pristine, tmp_path, capsys, monkeypatch):
    which, _, expected, apply = MATRIX[damage]
    expected = expected.get(command, "error") if isinstance(expected, dict) else expected
    case = tmp_path / "case"
    shutil.copytree(made, case)
    monkeypatch.chdir(case)
    run = case / which
    named = _named(damage, command, run)
    apply(run)
    outcome = _run(command, run, capsys)
    got = _classify(outcome, command, named)
    COUNTS[(expected, got)] += 1
    if expected == "same":
        assert got == "ok", (outcome.code, outcome.value, outcome.err[-3000:])
        if command == "resume":  # the run went on, and wrote its preprocessing again
            assert json.loads((run / "results.json").read_text())["status"] == "completed"
        else:
            assert outcome.value == pristine[command]
        return
    if expected == "warning" and command != "resume":
        assert (
            f"bigtrain: warning: checkpoint {run / _best(run)} has no digest file: loaded unverified"
            in outcome.err
        )
    if expected == "warning" and damage.startswith("ckpt"):
        assert outcome.code == 0 and "unverified" in outcome.out + outcome.err
    assert got == expected, (outcome.code, outcome.value, outcome.err[-3000:])


def test_matrix_counts(capsys):
    """The matrix's totals (run after it): every cell gave what it should."""
    if not COUNTS:
        pytest.skip("the matrix did not run")
    with capsys.disabled():
        print(f"\ndamaged-file matrix: {sum(COUNTS.values())} cells: " + ", ".join(
            f"{expected} -> {got}: {n}" for (expected, got), n in sorted(COUNTS.items())))  # fmt: skip
    assert all(e == g or (e, g) == ("same", "ok") for e, g in COUNTS)


def test_the_executable_prints_one_line_for_a_damaged_checkpoint_and_a_changed_corpus(made, tmp_path):
    """The same through `python -m bigtrain` (no traceback on its stderr), two cases."""
    case = tmp_path / "case"
    shutil.copytree(made, case)
    _truncate(case / "table" / _best(case / "table"))
    _flip(case / SHARD, 1000)
    for args, named in (
        (["eval", "table"], "epoch"),
        (["resume=tokens", "trainer.max_epochs=2"], "shard-00000.bin"),
    ):
        out = bigtrain_cmd(*args, cwd=case)
        errors = [s for s in out.stderr.splitlines() if s.startswith("bigtrain: error: ")]
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
        assert len(errors) == 1 and named in errors[0], out.stderr[-3000:]


# ------------------------------------------------------------------ data fingerprints


def _case(made: Path, tmp_path: Path, monkeypatch) -> Path:
    case = tmp_path / "case"
    shutil.copytree(made, case)
    monkeypatch.chdir(case)
    return case


def _lines(capsys) -> list[str]:
    captured = capsys.readouterr()
    return [s for s in (captured.err + captured.out).splitlines() if s.startswith("bigtrain: ")]


def test_a_changed_table_is_refused_by_eval_and_resume_unless_accepted(made, tmp_path, capsys, monkeypatch):
    run = _case(made, tmp_path, monkeypatch) / "table"
    was = file_entry("table.csv")
    data = bytearray(Path("table.csv").read_bytes())
    data[-20] = ord("9" if data[-20] != ord("9") else "8")  # one character: the same size
    Path("table.csv").write_bytes(bytes(data))
    now = file_entry("table.csv")
    assert now["bytes"] == was["bytes"] and now["sha256"] != was["sha256"]
    line = (
        f"bigtrain: error: table.csv changed since the run trained on it ({was['bytes']} bytes, sha256 "
        f"{was['sha256'][:12]}... -> {now['bytes']} bytes, {now['sha256'][:12]}...): restore it, or add "
        "accept_changed_data=true to use it as it is now"
    )
    for args in (["eval", str(run)], [f"resume={run}", "trainer.max_epochs=2"]):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 2 and _lines(capsys) == [line], args
    assert json.loads((run / "results.json").read_text())["epochs"] == 1  # nothing trained
    main(["eval", str(run), "accept_changed_data=true"])
    assert "bigtrain: error" not in capsys.readouterr().err
    main([f"resume={run}", "trainer.max_epochs=2", "accept_changed_data=true"])
    assert json.loads((run / "results.json").read_text())["epochs"] == 2
    # The run has now trained on the table as it is: that is what inputs.json records.
    assert json.loads((run / "inputs.json").read_text())["files"] == [now]
    main(["eval", str(run)])
    assert not _lines(capsys)


def test_an_unchanged_run_evaluates_and_resumes_to_the_same_numbers(made, tmp_path, monkeypatch):
    case = _case(made, tmp_path, monkeypatch)
    run = case / "table"
    first = json.loads((run / "results.json").read_text())
    assert evaluate(run)["test"] == pytest.approx(first["test"], abs=1e-6)
    resumed = bigtrain.resume(run, ["trainer.max_epochs=2"])
    straight = bigtrain.train([*TABLE, "trainer.max_epochs=2"], run_dir=case / "straight")
    assert resumed["resumed"] == 1 and resumed["global_step"] == straight["global_step"] == 6
    assert resumed["test"] == pytest.approx(straight["test"], abs=1e-6)
    a, b = (
        torch.load(r / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for r in (run, case / "straight")
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fingerprints_of_tables_text_images_and_the_standard_library(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, text in (("train.csv", "x,y\n1,a\n"), ("val.csv", "x,y\n2,b\n"), ("test.csv", "x,y\n3,a\n")):
        Path(name).write_text(text)
    table = SimpleNamespace(name="csv", files=lambda: {s: f"{s}.csv" for s in ("train", "val", "test")})
    assert [e["path"] for e in fingerprints(table)["files"]] == ["train.csv", "val.csv", "test.csv"]
    Path("texts").mkdir()
    Path("texts/a.txt").write_text("a" * 100)
    Path("texts/b.txt").write_text("b" * 100)
    text = SimpleNamespace(name="text", paths=["texts"], max_bytes=50, tokenizer=None)
    assert [e["path"] for e in fingerprints(text)["files"]] == ["texts/a.txt"]  # b.txt is never read
    text.max_bytes = None
    record(tmp_path, text)
    Path("texts/c.txt").write_text("c")
    with pytest.raises(bigtrain.ConfigError, match=r"^texts/c.txt is new since the run trained on its data"):
        check(tmp_path, text)
    Path("texts/c.txt").unlink()
    Path("texts/b.txt").unlink()
    with pytest.raises(
        bigtrain.ConfigError, match=r"^texts/b.txt is gone since the run trained on it \(100 bytes"
    ):
        check(tmp_path, text)
    for folder, size in (("photos/cat", 10), ("photos/dog", 20)):
        Path(folder).mkdir(parents=True)
        Path(folder, "1.png").write_bytes(b"x" * size)
    images = SimpleNamespace(name="image_folder", root="photos")
    listing = fingerprints(images)["listings"][0]
    assert (listing["files"], listing["bytes"]) == (2, 30)
    record(tmp_path, images)
    Path("photos/dog/1.png").rename("photos/dog/2.png")  # same images, another listing
    with pytest.raises(bigtrain.ConfigError, match=r"^photos changed since .* \(2 images, 30 bytes"):
        check(tmp_path, images)
    stdlib = fingerprints(SimpleNamespace(name="stdlib_text", max_bytes=5000, tokenizer=None))
    assert stdlib["listings"][0]["bytes"] == 5000 and stdlib["listings"][0]["files"] >= 1
