"""Speech (docs/audio.md) on real espeak-ng audio: the log-mel front end against librosa, the
audio source's record against its data module, every bad input as one line before a run
directory exists, the audio families' records and parts, and a trained run's predict and eval on
new clips."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import conftest_audio
from bigtrain.config import ConfigError
from bigtrain.data import build_datamodule, data_spec
from bigtrain.data.batches import loaded_train_size, train_split_size
from bigtrain.distributed.parallel import family_of
from bigtrain.models import build_model
from bigtrain.models.family import family
from conftest import QUIET, SPEECH_EXPERIMENTS, bigtrain_cmd, make_cfg, read_results
from conftest_audio import WORDS, copy_words, write_wav

spoken_digits = conftest_audio.spoken_digits  # the session's spoken digits (a fixture)


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def words(root: Path) -> list[str]:
    return ["data=audio_folder", f"data.root={root / 'words'}", "model=kws_cnn/tiny"]


def strings(root: Path) -> list[str]:
    return [
        "data=audio_folder", f"data.manifest={root / 'strings' / 'transcripts.csv'}", "data.split_column=split",
        "data.max_seconds=3.0", "model=audio_transformer/tiny", "model.head=ctc", "metrics=ctc",
        "callbacks.checkpoint.monitor=val/cer",
    ]  # fmt: skip


# ------------------------------------------------------------------ features


@pytest.mark.parametrize(
    "rate,n_fft,n_mels,f_min,f_max", [(16000, 512, 40, 20.0, None), (22050, 1024, 80, 0.0, 8000.0)]
)
def test_the_mel_filterbank_is_librosas(rate, n_fft, n_mels, f_min, f_max):
    librosa = pytest.importorskip("librosa")
    from bigtrain.data.audio import mel_filterbank

    ours = mel_filterbank(rate, n_fft, n_mels, f_min, f_max or rate / 2).numpy()
    theirs = librosa.filters.mel(sr=rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)


def test_log_mels_are_librosas_on_speech(spoken_digits):
    librosa = pytest.importorskip("librosa")
    import soundfile as sf

    from bigtrain.data.audio import LOG_FLOOR, LogMel

    wave, rate = sf.read(next((spoken_digits / "words" / "train" / "seven").glob("*.wav")), dtype="float32")
    ours = LogMel(rate, 40, 25.0, 10.0, 20.0, None).log_mel(torch.from_numpy(wave)[None])[0].numpy()
    power = librosa.feature.melspectrogram(
        y=wave, sr=rate, n_fft=512, hop_length=160, win_length=400, window="hann", center=True,
        pad_mode="constant", power=2.0, n_mels=40, fmin=20.0, fmax=rate / 2,
    )  # fmt: skip
    np.testing.assert_allclose(ours, np.log(power + LOG_FLOOR), rtol=0, atol=1e-4)
    np.testing.assert_allclose(np.exp(ours) - LOG_FLOOR, power, rtol=0, atol=1e-5 * power.max())


def test_spec_augment_masks_training_batches_only(spoken_digits):
    cfg = make_cfg([*words(spoken_digits), "data.time_masks=2", "data.freq_masks=2"])
    dm = build_datamodule(cfg)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    x, y = dm.on_after_batch_transfer(batch, 0)  # no trainer: not training, no masks
    assert x.shape == (len(y), 1, 40, 101) and torch.isfinite(x).all()
    assert (x == 0).float().mean() < 0.01

    class Training:
        training = True
        distributed_sampler_kwargs = None
        accumulate_grad_batches = 1

    dm.trainer = Training()
    masked, _ = dm.on_after_batch_transfer(batch, 0)
    zeros = (masked == 0).float().mean()
    assert 0.02 < zeros < 0.6
    assert torch.equal(masked[masked != 0], x[masked != 0])


# ------------------------------------------------------------------ the record and its data module


@pytest.mark.parametrize("kind", ["words", "strings"])
def test_the_records_spec_and_train_size_are_the_data_modules(spoken_digits, kind):
    cfg = make_cfg(words(spoken_digits) if kind == "words" else strings(spoken_digits))
    before, samples = data_spec(cfg), train_split_size(cfg)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    assert dm.spec == before and samples == loaded_train_size(dm) > 0
    if kind == "words":
        assert before.task == "multiclass" and before.input_shape == (1, 40, 101)
        assert dm.class_names == sorted(WORDS)
        assert {k: len(v[1]) for k, v in dm.splits.items()} == {"train": 270, "val": 30, "test": 60}
    else:
        assert before.task == "ctc" and before.input_shape == (1, 40, 301)
        vocab = dm.preprocessing()["vocabulary"]
        assert vocab[:2] == ["", " "] and before.num_classes == len(vocab) == 17
        waves, labels, lengths = dm.splits["test"]
        rows = [r for r in rows_of(spoken_digits / "strings" / "transcripts.csv") if r["split"] == "test"]
        assert "".join(vocab[i] for i in labels[0, : lengths[0]]) == rows[0]["text"]


def test_the_held_out_voices_are_not_in_training(spoken_digits):
    def speakers(split: str) -> set[str]:
        return {p.name.split("_")[0] for p in (spoken_digits / "words" / split).rglob("*.wav")}

    train, val, test = speakers("train"), speakers("val"), speakers("test")
    assert len(test) == 3 * 2 and len(val) == 3 and len(train) == 3 * 9
    assert not (train & test) and not (train & val)
    rows = rows_of(spoken_digits / "strings" / "transcripts.csv")
    assert {r["voice"] for r in rows if r["split"] == "test"} == test


# ------------------------------------------------------------------ bad inputs


def _refused(tmp_path: Path, *args: str, env: dict | None = None) -> str:
    """The command's one error line; it exited 2 and made no run directory."""
    out = bigtrain_cmd(*args, "hydra.run.dir=run", cwd=tmp_path, env=env)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr[-3000:]
    assert not (tmp_path / "run").exists()
    return lines[0]


def _bad_folder(tmp_path: Path, spoken_digits: Path) -> Path:
    root = copy_words(spoken_digits / "words" / "train", tmp_path / "clips", per_class=3)
    return root


@pytest.mark.parametrize("case", ["unreadable", "empty", "no samples", "rate", "stereo"])
def test_a_bad_clip_is_one_line_naming_it(tmp_path, spoken_digits, case):
    root = _bad_folder(tmp_path, spoken_digits)
    bad = root / "three" / "bad.wav"
    extra: list[str] = []
    if case == "unreadable":
        bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
        want = f"cannot read audio {bad}: "
    elif case == "empty":
        bad.write_bytes(b"")
        want = f"audio file {bad} is empty: remove or replace the file"
    elif case == "no samples":
        write_wav(bad, seconds=0.0)
        want = f"audio file {bad} holds no samples: remove or replace the file"
    elif case == "rate":
        write_wav(bad, rate=8000)
        extra = ["data.resample=false"]
        want = f"audio file {bad} is 8000 Hz, not data.sample_rate=16000: set data.resample=true"
    else:
        write_wav(bad, channels=2)
        extra = ["data.downmix=false"]
        want = f"audio file {bad} has 2 channels but data.downmix=false asks for mono clips: set data.downmix=true"
    line = _refused(tmp_path, "data=audio_folder", f"data.root={root}", "model=kws_cnn/tiny", *extra)
    assert line.startswith(f"bigtrain: error: {want}"), line


def test_other_rates_and_stereo_are_resampled_and_averaged(tmp_path, spoken_digits):
    from bigtrain.data.audio import decode_clip

    path = write_wav(tmp_path / "stereo.wav", seconds=0.5, rate=44_100, channels=2)
    wave = decode_clip(path, 16_000, 16_000)
    assert wave.shape == (16_000,) and wave.dtype == np.float32
    assert 0.2 < np.abs(wave[:7000]).max() < 0.35 and not wave[8100:].any()  # 0.5 s of tone, then padding


def test_without_the_audio_extra_validation_says_how_to_install_it(tmp_path, spoken_digits):
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class _NoAudio:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('soundfile', 'soxr'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, _NoAudio())\n"
    )
    line = _refused(tmp_path, *words(spoken_digits), env={"PYTHONPATH": str(blocker)})
    assert (
        line == "bigtrain: error: data=audio_folder needs soundfile and soxr: pip install 'bigtrain[audio]'"
    )


def test_a_manifest_without_the_text_column_is_one_line(tmp_path):
    manifest = tmp_path / "clips.csv"
    write_wav(tmp_path / "a.wav")
    manifest.write_text("path,words\na.wav,one two\n")
    line = _refused(tmp_path, "data=audio_folder", f"data.manifest={manifest}", "model=audio_transformer/tiny",
                    "model.head=ctc", "metrics=ctc", "callbacks.checkpoint.monitor=val/cer")  # fmt: skip
    assert line.startswith(f"bigtrain: error: manifest {manifest}: row 1 has no 'text'"), line


@pytest.mark.parametrize(
    "overrides,want",
    [
        (
            ["model=mlp/tiny"],
            "data=audio_folder is audio but model=mlp/*: use model=kws_cnn/* or model=audio_transformer/*",
        ),
        (None, "model=kws_cnn/* needs audio data but data=digits: use data=audio_folder"),
        (
            ["model=audio_transformer/tiny", "model.head=ctc"],
            "model.head=ctc needs transcripts: set data.manifest=FILE",
        ),
        (
            ["metrics=ctc"],
            "metrics.names has cer, a transcription metric, but data=audio_folder has no transcripts",
        ),
        (["tricks.finders.lr.enabled=true"], "the finders train on the data's samples as they are in memory"),
    ],
    ids=["mlp on audio", "kws on digits", "ctc without transcripts", "cer on classes", "finders"],
)
def test_mismatched_pieces_are_one_line(tmp_path, spoken_digits, overrides, want):
    with pytest.raises(ConfigError) as e:
        make_cfg([*words(spoken_digits), *overrides] if overrides else ["data=digits", "model=kws_cnn/tiny"])
    assert want in str(e.value)


# ------------------------------------------------------------------ the families


@pytest.mark.parametrize(
    "preset", ["kws_cnn/tiny", "audio_transformer/tiny", "kws_cnn/small", "audio_transformer/small"]
)
def test_each_audio_record_and_its_parts_agree(spoken_digits, preset):
    cfg = make_cfg([*words(spoken_digits), f"model={preset}"])
    record, spec = family(cfg.model.family), data_spec(cfg)
    model = build_model(cfg.model, spec.input_shape, spec.num_outputs)
    parts = record.parts()
    assert family_of(model) is parts and model.config.family == record.name and record.inputs == "audio"
    assert parts.blocks(model) == parts.fsdp_units(model) and parts.blocks(model)
    for unit in parts.blocks(model):
        assert next(model.get_submodule(unit).parameters(), None) is not None, unit
    assert not hasattr(parts, "tp_plan") and record.tp_checks is None
    assert model(torch.zeros(3, *spec.input_shape)).shape == (3, 10)


def test_the_ctc_head_gives_labels_per_token(spoken_digits):
    cfg = make_cfg(strings(spoken_digits))
    spec = data_spec(cfg)
    model = build_model(cfg.model, spec.input_shape, spec.num_outputs)
    assert model(torch.zeros(2, *spec.input_shape)).shape == (2, 301 // 4, 17)


def test_greedy_ctc_decoding_and_error_rates():
    from torchmetrics.text import CharErrorRate, WordErrorRate

    from bigtrain.training.metrics import ctc_greedy, label_text

    vocab = ["", " ", "a", "b"]
    frames = torch.tensor([[2, 2, 0, 2, 1, 3, 3, 0]])  # a a _ a ' ' b b _ -> "aa b"
    (labels,) = ctc_greedy(torch.nn.functional.one_hot(frames, 4).float())
    assert "".join(vocab[i] for i in labels) == "aa b"
    cer, wer = CharErrorRate(), WordErrorRate()
    cer.update([label_text(labels)], [label_text([2, 1, 3])])  # said "aa b", truth "a b"
    wer.update([label_text(labels)], [label_text([2, 1, 3])])
    assert float(cer.compute()) == pytest.approx(1 / 3) and float(wer.compute()) == pytest.approx(1 / 2)


# ------------------------------------------------------------------ a run, predict and eval


@pytest.fixture(scope="module")
def kws_run(tmp_path_factory, spoken_digits) -> Path:
    where = tmp_path_factory.mktemp("kws")
    out = bigtrain_cmd(*QUIET, *words(spoken_digits), "trainer.max_epochs=1", "hydra.run.dir=run", cwd=where)
    assert out.returncode == 0, out.stderr[-3000:]
    return where / "run"


def test_predict_a_clip_and_a_folder(kws_run, spoken_digits, tmp_path):
    clip = next((spoken_digits / "words" / "test" / "four").glob("*.wav"))
    out = bigtrain_cmd("predict", str(kws_run), str(clip), "--out", "one.csv", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (row,) = rows_of(tmp_path / "one.csv")
    assert row["input"] == str(clip) and f"p_{row['predicted']}" in row and len(row) == 12
    assert sum(float(row[f"p_{w}"]) for w in WORDS) == pytest.approx(1.0, abs=1e-4)
    out = bigtrain_cmd(
        "predict", str(kws_run), str(spoken_digits / "words" / "test"), "--out", "all.csv", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(rows_of(tmp_path / "all.csv")) == 60


def test_eval_on_new_clips_uses_the_runs_statistics(kws_run, spoken_digits, tmp_path):
    new = copy_words(spoken_digits / "words" / "test", tmp_path / "new_clips")
    out = bigtrain_cmd("eval", str(kws_run), f"data.root={new}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (saved,) = (kws_run / "evals").glob("*.json")
    result = json.loads(saved.read_text())
    assert result["data"] == f"{new}: 60 clips" and 0.0 <= result["test"]["acc"] <= 1.0
    # The run's own test split through its data module gives the run's own test numbers.
    out = bigtrain_cmd("eval", str(kws_run), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    own = json.loads(max((kws_run / "evals").glob("*.json"), key=lambda p: p.stat().st_mtime).read_text())
    assert own["test"]["acc"] == pytest.approx(read_results(kws_run)["test"]["acc"], abs=1e-6)
    # The same clips as the test split, given as new data, score the same.
    assert result["test"]["acc"] == pytest.approx(own["test"]["acc"], abs=1e-6)
    shutil.rmtree(kws_run / "evals")


def test_predict_refuses_a_bad_clip_in_one_line(kws_run, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"")
    out = bigtrain_cmd("predict", str(kws_run), str(bad), cwd=tmp_path)
    assert (
        out.returncode == 2
        and out.stderr.strip() == f"bigtrain: error: audio file {bad} is empty: remove or replace the file"
    )


def test_a_transcription_run_predicts_text_and_evaluates_a_manifest(tmp_path, spoken_digits):
    out = bigtrain_cmd(
        *QUIET, *strings(spoken_digits), "trainer.max_epochs=1", "hydra.run.dir=run", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = read_results(tmp_path / "run")
    assert set(results["test"]) == {"loss", "cer", "wer"}
    clip = next((spoken_digits / "strings" / "clips").glob("*.wav"))
    out = bigtrain_cmd("predict", "run", str(clip), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (row,) = rows_of(tmp_path / "predictions.csv")
    assert set(row) == {"input", "predicted"} and set(row["predicted"]) <= set(" efghinorstuvwxz")
    rows = rows_of(spoken_digits / "strings" / "transcripts.csv")[:10]
    manifest = tmp_path / "new.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "text"])
        writer.writeheader()
        writer.writerows({"path": r["path"], "text": r["text"]} for r in rows)
    base = spoken_digits / "strings"
    out = bigtrain_cmd(
        "eval", "run", f"data.manifest={manifest}", f"data.root={base}", "data.split_column=null", "data.batch_size=2",
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    (saved,) = (tmp_path / "run" / "evals").glob("*.json")
    result = json.loads(saved.read_text())
    assert result["data"] == f"{manifest}: 10 clips" and set(result["test"]) == {"loss", "cer", "wer"}


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


@pytest.mark.parametrize("name", SPEECH_EXPERIMENTS)
def test_every_speech_experiment_trains_a_few_steps(tmp_path, spoken_digits, name):
    """Each shipped speech experiment, pointed at the spoken digits, trains and tests."""
    import bigtrain

    data = (
        [
            f"data.manifest={spoken_digits / 'strings' / 'transcripts.csv'}",
            f"data.root={spoken_digits / 'strings'}",
        ]
        if name.endswith("_ctc")
        else [f"data.root={spoken_digits / 'words'}", "data.batch_size=32"]
    )
    results = bigtrain.train(
        [*QUIET, f"+experiment={name}", *data, "+debug=fast", "data.max_memory_mb=512"],
        run_dir=tmp_path / "run",
    )
    assert results["status"] == "completed" and results["global_step"] == 3
    assert results["test"] and all(np.isfinite(v) for v in results["test"].values())
