"""Training end to end in this process: every experiment, the run directory contract, metrics
against scikit-learn on the same predictions, determinism and resume."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from bigtrain.build import build_module
from bigtrain.data import build_datamodule, data_spec
from conftest import EXPERIMENTS, FAST, LM_EXPERIMENTS, SPEECH_EXPERIMENTS, make_cfg, read_results

RESULT_KEYS = {
    "status",
    "experiment",
    "global_step",
    "epochs",
    "val",
    "test",
    "best_checkpoint",
    "params",
    "wall_seconds",
    "throughput",
}
METRIC_KEYS = {"acc", "precision", "recall", "f1", "auroc", "loss"}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", [e for e in EXPERIMENTS if e not in (*LM_EXPERIMENTS, *SPEECH_EXPERIMENTS)])
def test_every_experiment_trains_a_few_steps(run, name):
    results, run_dir = run([f"+experiment={name}", "+debug=fast"])
    assert results["status"] == "completed"
    assert results["global_step"] == 3
    assert set(results["test"]) == METRIC_KEYS
    assert all(np.isfinite(v) for v in results["test"].values())


def test_results_json_contract_and_plots(run):
    results, run_dir = run(["trainer.max_epochs=2", "trainer.limit_train_batches=5"])
    on_disk = read_results(run_dir)
    assert set(on_disk) >= RESULT_KEYS
    assert on_disk["status"] == "completed"
    assert on_disk["epochs"] == 2 and on_disk["global_step"] == 10
    assert set(on_disk["val"]) == METRIC_KEYS and set(on_disk["test"]) == METRIC_KEYS
    assert set(on_disk["throughput"]) == {"samples_per_s", "tokens_per_s", "mfu"}
    assert on_disk["throughput"]["samples_per_s"] > 0
    assert on_disk["params"] == sum(
        p.numel() for p in build_module(make_cfg(), data_spec(make_cfg())).model.parameters()
    )
    matrix = np.array(on_disk["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 270  # every test sample counted once
    for png in ("loss.png", "metrics.png", "roc.png", "confusion_matrix.png"):
        data = (run_dir / "plots" / png).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, png
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert any(r.get("val/acc") for r in rows) and any(r.get("train/loss") for r in rows)
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["params"]["total"] == on_disk["params"]
    assert plan["memory_per_device_bytes"]["total"] > 0


@pytest.mark.parametrize(
    ("experiment", "names"),
    [("digits_mlp", [str(k) for k in range(10)]), ("breast_cancer_mlp", ["malignant", "benign"])],
)
def test_plots_name_the_classes_and_give_each_curve_its_auc(run, monkeypatch, experiment, names):
    import re

    from bigtrain.callbacks import plots

    drawn = {}

    def keep(draw):
        def wrapper(*args, **kwargs):
            drawn[draw.__name__] = out = draw(*args, **kwargs)
            return out

        return wrapper

    monkeypatch.setattr(plots, "plot_confusion", keep(plots.plot_confusion))
    monkeypatch.setattr(plots, "plot_roc", keep(plots.plot_roc))
    results, run_dir = run([f"+experiment={experiment}", "+debug=fast", "callbacks.plots=true"])
    ax = drawn["plot_confusion"].ax_  # scikit-learn's ConfusionMatrixDisplay
    assert [t.get_text() for t in ax.get_xticklabels()] == names  # predicted
    assert [t.get_text() for t in ax.get_yticklabels()] == names  # true
    counts = [[int(t.get_text()) for t in row] for row in drawn["plot_confusion"].text_]
    assert counts == results["confusion_matrix"]
    legend = [t.get_text() for t in drawn["plot_roc"][0].ax_.get_legend().get_texts()]
    curves = [re.fullmatch(r"(.+) \(AUC = ([0-9.]+)\)", text).groups() for text in legend]
    assert curves[-1] == ("Chance level", "0.5")
    aucs = [float(a) for _, a in curves[:-1]]
    if len(names) == 2:  # binary: one curve, the positive class (index 1)
        assert [n for n, _ in curves[:-1]] == names[1:]
    else:  # one-vs-rest curve per class; AUROC is their macro mean
        assert [n for n, _ in curves[:-1]] == names
    assert np.mean(aucs) == pytest.approx(results["test"]["auroc"], abs=0.006)
    assert (run_dir / "plots" / "confusion_matrix.png").read_bytes().startswith(PNG)


def test_plot_labels_fall_back_to_class_indices(tmp_path):
    from bigtrain.callbacks.plots import plot_confusion

    display = plot_confusion(torch.tensor([[3, 1], [0, 4]]), tmp_path / "cm.png", class_names=None)
    assert [t.get_text() for t in display.ax_.get_xticklabels()] == ["0", "1"]
    assert (tmp_path / "cm.png").read_bytes().startswith(PNG)


def _predict(cfg, ckpt_path, split):
    spec = data_spec(cfg)
    module = build_module(cfg, spec)
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    module.eval()
    dm = build_datamodule(cfg)
    dm.setup("test")
    x, y = dm.splits[split]
    with torch.no_grad():
        logits = module(x)
    return logits, y.numpy()


@pytest.mark.parametrize("experiment", ["digits_mlp", "breast_cancer_mlp"])
def test_test_metrics_equal_scikit_learn_on_the_same_predictions(run, experiment):
    overrides = [f"+experiment={experiment}", "trainer.max_epochs=2"]
    results, run_dir = run(overrides)
    cfg = make_cfg(overrides)
    logits, y = _predict(cfg, run_dir / results["best_checkpoint"], "test")
    if logits.shape[-1] == 1:
        prob = torch.sigmoid(logits.squeeze(-1)).numpy()
        pred = (prob >= 0.5).astype(int)
        expected = {
            "acc": skm.accuracy_score(y, pred),
            "precision": skm.precision_score(y, pred, zero_division=0),
            "recall": skm.recall_score(y, pred),
            "f1": skm.f1_score(y, pred),
            "auroc": skm.roc_auc_score(y, prob),
            "loss": skm.log_loss(y, prob),
        }
    else:
        prob = torch.softmax(logits, -1).numpy().astype(np.float64)
        prob /= prob.sum(1, keepdims=True)
        pred = prob.argmax(1)
        expected = {
            "acc": skm.accuracy_score(y, pred),
            "precision": skm.precision_score(y, pred, average="macro", zero_division=0),
            "recall": skm.recall_score(y, pred, average="macro"),
            "f1": skm.f1_score(y, pred, average="macro"),
            "auroc": skm.roc_auc_score(y, prob, multi_class="ovr", average="macro"),
            "loss": skm.log_loss(y, prob, labels=list(range(10))),
        }
    for key, value in expected.items():
        assert results["test"][key] == pytest.approx(value, abs=1e-5), key


def test_same_command_twice_gives_the_same_metrics(run):
    a, _ = run(["trainer.max_epochs=2"])
    b, _ = run(["trainer.max_epochs=2"])
    assert a["test"] == b["test"] and a["val"] == b["val"]


def test_resume_from_checkpoint_continues_training(run):
    first, run_dir = run(FAST)
    assert first["global_step"] == 3
    second, _ = run([*FAST, "trainer.max_epochs=2", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"])
    assert second["global_step"] == 6 and second["epochs"] == 2


def test_failed_run_still_writes_results(run, tmp_path, monkeypatch):
    from bigtrain.training import module as module_file

    def explode(self, batch, batch_idx):
        raise RuntimeError("boom")

    monkeypatch.setattr(module_file.BigtrainModule, "training_step", explode)
    with pytest.raises(RuntimeError, match="boom"):
        run(FAST)
    results = read_results(tmp_path / "run1")
    assert results["status"] == "failed" and "boom" in results["error"]


def test_throughput_and_ema_still_see_every_batch(run):
    results, _ = run(
        ["tricks.ema.enabled=true", "tricks.ema.start_step=0", "callbacks.throughput.warmup=0", *FAST]
    )
    assert results["global_step"] == 3 and results["throughput"]["samples_per_s"] > 0
    assert results["ema"]["updates"] == 3
