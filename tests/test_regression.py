"""Regression on a numeric target (scikit-learn's diabetes as a CSV) and the plots that go with
training: predicted vs true, the learning-rate finder's axis, a language model's loss by step."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

import bigtrain
from bigtrain.build import build_module
from bigtrain.callbacks.finders import loss_limits
from bigtrain.data import build_datamodule, data_spec
from bigtrain.runs.validate import validate

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def diabetes_csv(tmp_path_factory):
    """scikit-learn's diabetes table in its raw units (442 rows, 10 features, target 25-346)."""
    data = load_diabetes(scaled=False)
    path = tmp_path_factory.mktemp("diabetes") / "diabetes.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*data.feature_names, "progression"])
        for row, y in zip(data.data, data.target, strict=True):
            w.writerow([*(f"{v:g}" for v in row), f"{y:g}"])
    return path


def _overrides(path) -> list[str]:
    return [
        "data=csv",
        f"data.path={path}",
        "data.target=progression",
        "trainer.max_epochs=15",
        "model=mlp/small",
        "optim.lr=3e-3",
    ]


def test_a_numeric_target_with_many_values_is_regressed(diabetes_csv, run):
    """auto picks regression; the metrics are scikit-learn's on the best checkpoint's test
    predictions, in the target's units; the model learned something (R2 well above 0)."""
    overrides = _overrides(diabetes_csv)
    results, run_dir = run(overrides)
    assert results["status"] == "completed"
    test = results["test"]
    assert set(test) >= {"loss", "mae", "rmse", "r2"} and "acc" not in test
    # The same numbers from scikit-learn, on predictions of the checkpoint that was tested.
    cfg = validate(bigtrain.compose(overrides))
    dm = build_datamodule(cfg)
    dm.setup("test")
    module = build_module(cfg, data_spec(cfg))
    ckpt = torch.load(run_dir / results["best_checkpoint"], map_location="cpu", weights_only=True)
    module.load_state_dict(ckpt["state_dict"])
    module.eval()
    x, y = dm.splits["test"]
    with torch.no_grad():
        _, pred = module.loss_and_probs(module(x), y)
    y, pred = y.numpy(), pred.numpy()
    assert test["mae"] == pytest.approx(mean_absolute_error(y, pred), rel=1e-4)
    assert test["rmse"] == pytest.approx(root_mean_squared_error(y, pred), rel=1e-4)
    assert test["r2"] == pytest.approx(r2_score(y, pred), abs=1e-4)
    print("test", test)
    assert test["r2"] > 0.3, test
    # The target's training statistics are part of the checkpoint (a prediction needs them).
    mean, std = dm.table.target_stats
    assert float(ckpt["state_dict"]["target_mean"]) == pytest.approx(mean)
    assert float(ckpt["state_dict"]["target_std"]) == pytest.approx(std)
    assert (run_dir / "plots" / "predicted_vs_true.png").read_bytes().startswith(PNG)
    assert not (run_dir / "plots" / "confusion_matrix.png").exists()
    assert "confusion_matrix" not in json.loads((run_dir / "results.json").read_text())


def test_regression_split_is_shuffled_and_stats_come_from_train(diabetes_csv):
    cfg = validate(bigtrain.compose(_overrides(diabetes_csv)))
    spec = data_spec(cfg)
    assert spec.task == "regression" and spec.num_outputs == 1
    dm = build_datamodule(cfg)
    dm.setup("fit")
    sizes = dm.sizes()
    assert sum(sizes.values()) == 442 and sizes["test"] == math.ceil(442 * 0.15)  # scikit-learn rounds up
    ys = dm.splits["train"][1].numpy()
    assert spec.target_stats == pytest.approx((ys.mean(), ys.std()), rel=1e-5)
    assert "regression on 'progression'" in dm.describe()


def test_a_forced_classification_of_a_continuous_target_says_how_to_regress(diabetes_csv, tmp_path):
    with pytest.raises(bigtrain.ConfigError, match="data.task=regression"):
        bigtrain.train([*_overrides(diabetes_csv), "data.task=classification"], run_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_regression_metrics_on_class_labels_are_refused(tmp_path):
    path = tmp_path / "t.csv"
    rows = [[i % 7, i % 3, "ab"[i % 2]] for i in range(60)]
    path.write_text("a,b,label\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    with pytest.raises(bigtrain.ConfigError, match="metrics=default"):
        bigtrain.train(
            ["data=csv", f"data.path={path}", "data.target=label", "metrics=regression"],
            run_dir=tmp_path / "r",
        )


def test_lr_finder_axis_is_not_squashed_by_the_divergence():
    losses = [2.3, 2.2, 2.0, 1.7, 1.5, 1.6, 3.0, 40.0, 9e5]
    smoothed = [2.3, 2.25, 2.15, 2.0, 1.85, 1.8, 2.1, 6.0, 9e4]
    low, high = loss_limits(losses, smoothed)
    assert low < 1.5 and 2.3 < high < 3.0


def test_a_language_model_plots_loss_by_step(run):
    results, run_dir = run(
        [
            "model=gpt/tiny",
            "trainer.max_steps=12",
            "trainer.max_epochs=-1",
            "trainer.log_every_n_steps=2",
            "trainer.val_check_interval=6",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
            "callbacks.samples.enabled=false",
        ]
    )
    assert results["status"] == "completed" and results["global_step"] == 12
    assert (run_dir / "plots" / "loss_by_step.png").read_bytes().startswith(PNG)
    logged = [
        (int(r["step"]), float(r["train/loss"]))
        for r in csv.DictReader((run_dir / "metrics.csv").open())
        if r.get("train/loss")
    ]
    assert [s for s, _ in logged] == [1, 3, 5, 7, 9, 11]
    assert np.isfinite([v for _, v in logged]).all()


def test_weights_with_a_tokenizer_beside_them_bring_it_to_text_data(tmp_path):
    """model.init_from=FOLDER with FOLDER/tokenizer.json: text data is tokenized with it, unless
    the user chose a tokenizer; without one beside the weights, bytes stay."""
    from bigtrain.runs.compose import compose_run

    folder = tmp_path / "my weights"
    folder.mkdir()
    (folder / "tokenizer.json").write_text("{}")
    cfg, added = compose_run(["model=gpt/tiny", f"model.init_from='{folder}'"])
    assert added[-1] == f"data.tokenizer='{folder / 'tokenizer.json'}'"
    assert cfg.data.name == "stdlib_text" and cfg.data.tokenizer == str(folder / "tokenizer.json")
    _, chosen = compose_run(
        ["model=gpt/tiny", "data=stdlib_text", f"model.init_from='{folder}'", "data.tokenizer=null"]
    )
    assert not any(a.startswith("data.tokenizer=") for a in chosen)
    (folder / "tokenizer.json").unlink()
    _, none = compose_run(["model=gpt/tiny", f"model.init_from='{folder}'"])
    assert not any(a.startswith("data.tokenizer=") for a in none)
