"""Speech models trained on real espeak-ng speech: keyword accuracy and CTC error rates on
held-out voices (slow), and the audio families on two processes under ddp and fsdp, step for
step equal to one process (distributed)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

import conftest_audio
from conftest import QUIET, bigtrain_cmd, read_results
from conftest_audio import make_digits

spoken_digits = conftest_audio.spoken_digits  # the session's spoken digits (a fixture)


@pytest.fixture(scope="module")
def more_digits(tmp_path_factory) -> Path:
    """4 voices x 20 variants, 4 of them held out for test and 2 for validation: 800 words and
    480 digit strings (about 10 s to make)."""
    out = tmp_path_factory.mktemp("speech") / "digits"
    return make_digits(
        out, "--voices", "en-us,en-gb,en-029,en-gb-scotland", "--variants", "20", "--test-variants", "4",
        "--val-variants", "2", "--strings", "6",
    )  # fmt: skip


@pytest.mark.slow
def test_spoken_digits_reach_95_percent_on_held_out_voices(more_digits, tmp_path):
    out = bigtrain_cmd(
        *QUIET, "+experiment=spoken_digits", f"data.root={more_digits / 'words'}", "trainer.max_epochs=10",
        "hydra.run.dir=run", cwd=tmp_path, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    results = read_results(tmp_path / "run")
    assert results["status"] == "completed"
    assert results["test"]["acc"] >= 0.95, results["test"]


@pytest.mark.slow
def test_spoken_digit_strings_are_transcribed_on_held_out_voices(more_digits, tmp_path):
    """A seventh of the experiment's data (in batches of 8 for as many steps) and its 30 epochs:
    the experiment itself (docs/audio.md) reaches a CER under 0.10; this smaller set under 0.3."""
    out = bigtrain_cmd(
        *QUIET, "+experiment=spoken_digits_ctc", f"data.manifest={more_digits / 'strings' / 'transcripts.csv'}",
        "data.batch_size=8", "hydra.run.dir=run", cwd=tmp_path, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    results = read_results(tmp_path / "run")
    assert results["status"] == "completed"
    assert results["test"]["cer"] <= 0.3, results["test"]
    assert results["test"]["wer"] <= 1.0


# Every step's loss in metrics.csv, two epochs of 8 steps; no dropout, no SpecAugment (their
# masks are drawn per rank).
COMPARE = ["logger=csv", "trainer.log_every_n_steps=1", "trainer.max_epochs=2", "data.drop_last=true"]
MODELS = {
    "kws_cnn": ["model=kws_cnn/tiny", "data.batch_size=32"],
    "ctc": [
        "model=audio_transformer/tiny", "model.head=ctc", "metrics=ctc", "callbacks.checkpoint.monitor=val/cer",
        "data.max_seconds=3.0", "data.split_column=split", "data.batch_size=12",
    ],
}  # fmt: skip


def _data(kind: str, root: Path) -> list[str]:
    if kind == "ctc":
        return ["data=audio_folder", f"data.manifest={root / 'strings' / 'transcripts.csv'}"]
    return ["data=audio_folder", f"data.root={root / 'words'}"]


def _losses(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")}


@pytest.fixture(scope="module")
def single(tmp_path_factory, spoken_digits) -> dict[str, Path]:
    """Each audio model on one process: what two processes must reproduce."""
    where = tmp_path_factory.mktemp("speech_single")
    runs = {}
    for kind, model in MODELS.items():
        out = bigtrain_cmd(
            *_data(kind, spoken_digits), *model, *COMPARE, f"hydra.run.dir={kind}", cwd=where, timeout=600
        )
        assert out.returncode == 0, out.stderr[-3000:]
        runs[kind] = where / kind
    return runs


@pytest.mark.distributed
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_audio_models_train_on_two_processes_like_one(single, spoken_digits, tmp_path, kind, strategy):
    """With the default callbacks: every step's loss equals the single process's, so the
    features made on each rank and the sharded blocks change nothing."""
    out = bigtrain_cmd(
        *_data(kind, spoken_digits), *MODELS[kind], *COMPARE, f"strategy={strategy}", "trainer.accelerator=cpu",
        "trainer.devices=2", "hydra.run.dir=run", cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    want, got = _losses(single[kind]), _losses(tmp_path / "run")
    assert len(want) >= 10 and set(got) == set(want)
    for step, loss in want.items():
        assert got[step] == pytest.approx(loss, rel=1e-4), step
    results = read_results(tmp_path / "run")
    assert results["status"] == "completed"
    assert results["test"] == pytest.approx(read_results(single[kind])["test"], rel=1e-3, abs=1e-4)
    shutil.rmtree(tmp_path / "run")
