"""Using a finished run: `bigtrain eval`, `bigtrain predict` and `bigtrain.load`, on real runs.

Each training here is short (FAST: one short epoch); what is checked is that evaluation and
prediction see exactly what training saw: the same metrics for the same checkpoint, the same
inputs for the same raw rows and images."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

import bigtrain
from bigtrain.data import build_datamodule
from bigtrain.runs.evaluate import evaluate
from bigtrain.runs.validate import validate
from conftest import FAST, bigtrain_cmd


def test_eval_equals_the_runs_own_test_metrics(run):
    results, run_dir = run([*FAST, "trainer.limit_test_batches=null"])
    out = evaluate(run_dir)
    assert out["checkpoint"] == results["best_checkpoint"]
    assert out["test"].keys() == results["test"].keys()
    for key, value in results["test"].items():
        assert out["test"][key] == pytest.approx(value, abs=1e-6), key
    saved = json.loads(
        (run_dir / "evals")
        .joinpath(next(iter(sorted(p.name for p in (run_dir / "evals").iterdir()))))
        .read_text()
    )
    assert saved["test"] == out["test"]
    again = evaluate(run_dir)  # a second evaluation is a second file, the first one stays
    assert again["file"] != out["file"] and len(list((run_dir / "evals").iterdir())) == 2


@pytest.fixture
def split_table(tmp_path):
    """scikit-learn's wine as a CSV with a split column and a categorical feature."""
    from sklearn.datasets import load_wine

    wine = load_wine()
    path = tmp_path / "wine.csv"
    rng = np.random.default_rng(0)
    splits = rng.choice(["train", "val", "test"], size=len(wine.target), p=[0.7, 0.15, 0.15])
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*wine.feature_names[:6], "band", "split", "cultivar"])
        for row, y, s in zip(wine.data, wine.target, splits, strict=True):
            band = "high" if row[0] > 13 else "low"
            w.writerow([*(f"{v:g}" for v in row[:6]), band, s, wine.target_names[y]])
    return path


def test_predict_on_the_training_rows_equals_what_training_saw(run, split_table, tmp_path):
    overrides = [
        "data=csv",
        f"data.path={split_table}",
        "data.target=cultivar",
        "data.split_column=split",
        "data.categorical=[band]",
        "trainer.max_epochs=2",
    ]
    results, run_dir = run(overrides)
    model = bigtrain.load(run_dir)
    assert model.class_names == ["class_0", "class_1", "class_2"]
    # The training split's rows alone, as raw text, through the saved preprocessing ...
    rows = list(csv.DictReader(split_table.open()))
    train_csv = tmp_path / "train_rows.csv"
    with train_csv.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k != "split"])
        w.writeheader()
        w.writerows({k: v for k, v in r.items() if k != "split"} for r in rows if r["split"] == "train")
    predicted = model.predict(train_csv)
    # ... equal the encoded rows the model trained on, and its outputs on them.
    cfg = validate(bigtrain.compose(overrides))
    dm = build_datamodule(cfg)
    dm.setup("fit")
    x, y = dm.splits["train"]
    probs = model.outputs(x)
    got = torch.tensor([[r[f"p_{c}"] for c in model.class_names] for r in predicted])
    assert torch.allclose(got, probs, atol=1e-6)
    assert [r["target"] for r in predicted] == [model.class_names[i] for i in y.tolist()]
    assert [r["predicted"] for r in predicted] == [model.class_names[i] for i in probs.argmax(1).tolist()]
    # The command writes the same rows, and never over an existing file.
    out = bigtrain_cmd("predict", str(run_dir), str(train_csv), "--out", "p.csv", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    written = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert [r["predicted"] for r in written] == [r["predicted"] for r in predicted]
    again = bigtrain_cmd("predict", str(run_dir), str(train_csv), "--out", "p.csv", cwd=tmp_path)
    assert (
        again.returncode == 2
        and again.stderr.strip()
        == "bigtrain: error: p.csv already exists: give another --out or move it away"
    )
    # eval on another table: every row, encoded with the training statistics.
    other = evaluate(run_dir, [f"data.path={train_csv}", "data.split_column=null"])
    assert other["data"].endswith(f"{(y.numel())} rows")
    assert other["test"]["acc"] == pytest.approx(float((probs.argmax(1) == y).float().mean()), abs=1e-6)
    # A table smaller than one training batch is evaluated too: eval trains nothing.
    few = tmp_path / "few_rows.csv"
    few.write_text("".join(train_csv.read_text().splitlines(keepends=True)[:11]))  # header + 10 rows
    out = bigtrain_cmd("eval", str(run_dir), f"data.path={few}", "data.split_column=null", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.startswith("bigtrain eval: "), out.stderr
    assert f"{few}: 10 rows" in out.stdout.splitlines()[0]


def test_a_digits_model_predicts_png_files_as_it_sees_its_own_images(run, tmp_path):
    results, run_dir = run([*FAST])
    model = bigtrain.load(run_dir)
    digits = load_digits()
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(12):  # 8x8 PNGs of the digits (values 0-16 scaled to 0-255, exact in uint8 for 16ths)
        Image.fromarray((digits.images[i] * 255 / 16).round().astype("uint8"), mode="L").save(
            folder / f"{i:02d}.png"
        )
    predicted = model.predict(folder)
    assert [r["input"] for r in predicted] == [str(folder / f"{i:02d}.png") for i in range(12)]
    # The same images through the training preprocessing (standardised per pixel).
    prep = model.preprocessing
    raw = torch.tensor((digits.images[:12] * 255 / 16).round() / 255 * 16, dtype=torch.float32)
    x = (raw.reshape(12, 64) - torch.tensor(prep["mean"])) / torch.tensor(prep["std"])
    probs = model.outputs(x.reshape(12, 1, 8, 8))
    got = torch.tensor([[r[f"p_{c}"] for c in model.class_names] for r in predicted])
    assert torch.allclose(got, probs, atol=1e-5)
    one = model.predict(folder / "00.png")
    assert one[0]["predicted"] == predicted[0]["predicted"]


def test_a_language_model_generates_from_a_prompt(run, tmp_path):
    results, run_dir = run(
        [
            "model=gpt/tiny",
            "trainer.max_steps=3",
            "trainer.max_epochs=-1",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
            "callbacks.samples.enabled=false",
        ]
    )
    model = bigtrain.load(run_dir)
    greedy = model.predict("import os\n", max_new_tokens=12)
    assert isinstance(greedy, str) and greedy == model.predict("import os\n", max_new_tokens=12)
    sampled = model.predict("import os\n", max_new_tokens=12, temperature=1.0, top_k=20, seed=3)
    assert len(sampled.encode("utf-8", errors="replace")) >= 1
    out = bigtrain_cmd("predict", str(run_dir), "import os\n", "--max-new-tokens", "12", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "import os\n" + greedy + "\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["eval", "no/such/run"],
            "bigtrain: error: no/such/run does not exist: give the run directory of a finished run",
        ),
        (
            ["predict", ".", "x.csv"],
            "bigtrain: error: . is not a bigtrain run directory (no .hydra/config.yaml): give a run's folder",
        ),
    ],
)
def test_bad_run_directories_are_one_line(tmp_path, args, message):
    out = bigtrain_cmd(*args, cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.strip() == message
