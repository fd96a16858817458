"""PNG plots in <run_dir>/plots/: loss and metric curves, ROC, confusion matrix, predicted vs true.

Drawn on rank zero with matplotlib's Agg backend (no display needed). The epoch values come
from the module's `history`, which holds what was logged, synced over processes. The ROC and
confusion-matrix figures are scikit-learn's `RocCurveDisplay` and `ConfusionMatrixDisplay`,
labelled with the data module's `class_names` (class indices where it has none); the ROC legend
gives each curve's AUC (one-vs-rest per class for multiclass). A regression run's test
predictions are drawn by scikit-learn's `PredictionErrorDisplay` (actual vs predicted). A
language model, which often trains one long epoch, also gets loss_by_step.png (the training
loss of every logging step and the validation loss of every validation). The loss and metric
curves have no library equivalent over an epoch history and stay plain matplotlib.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class Plots(pl.Callback):
    """Writes the curves when fit ends and the ROC and confusion matrix when testing ends."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        history = getattr(pl_module, "history", [])
        if not history:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        plot_curves(history, self.out_dir)
        if getattr(pl_module, "task", None) == "lm":
            steps = [(step, float(v)) for step, v in getattr(pl_module, "step_losses", [])]
            plot_loss_by_step(steps, history, self.out_dir / "loss_by_step.png")

    @rank_zero_only
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        artifacts = getattr(pl_module, "test_artifacts", {})
        if not artifacts:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if "predicted" in artifacts:
            plot_predictions(
                artifacts["predicted"], artifacts["true"], self.out_dir / "predicted_vs_true.png"
            )
            return
        names = getattr(trainer.datamodule, "class_names", None)
        plot_roc(artifacts["roc"], self.out_dir / "roc.png", names)
        plot_confusion(artifacts["confusion_matrix"], self.out_dir / "confusion_matrix.png", names)


def _series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(h["epoch"], h[key]) for h in history if key in h]
    return [p[0] for p in points], [p[1] for p in points]


def plot_curves(history: list[dict], out_dir: Path) -> None:
    """loss.png (train and val loss per epoch) and metrics.png (each metric, train and val)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("train/loss_epoch", "train"), ("val/loss", "val")):
        xs, ys = _series(history, key)
        if xs:
            ax.plot(xs, ys, marker="o", ms=3, label=label)
    ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "loss.png", dpi=100)
    plt.close(fig)

    names = sorted({k.split("/", 1)[1] for h in history for k in h if "/" in k and "loss" not in k})
    names = [n for n in names if not n.startswith("samples")]
    if not names:
        return
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        for stage in ("train", "val"):
            xs, ys = _series(history, f"{stage}/{name}")
            if xs:
                ax.plot(xs, ys, marker="o", ms=3, label=stage)
        ax.set(xlabel="epoch", title=name)
        ax.legend()
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_dir / "metrics.png", dpi=100)
    plt.close(fig)


def labels_for(class_names: list[str] | None, n: int) -> list[str]:
    """`class_names` when there is one per class, else the class indices as text."""
    if class_names is not None and len(class_names) == n:
        return [str(c) for c in class_names]
    return [str(i) for i in range(n)]


def plot_roc(roc: tuple[Any, Any], path: Path, class_names: list[str] | None = None) -> list:
    """roc.png: the test ROC curve (binary) or one one-vs-rest curve per class, each with its AUC
    in the legend. `roc` is torchmetrics' (fpr, tpr): tensors, or lists of them per class.
    Returns the scikit-learn displays drawn (their figure is closed once saved)."""
    from sklearn.metrics import RocCurveDisplay, auc

    plt = _pyplot()
    fpr, tpr = roc
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    if isinstance(fpr, list):  # multiclass: one-vs-rest curve per class
        curves = list(zip(fpr, tpr, labels_for(class_names, len(fpr)), strict=True))
        pos_label = None
    else:
        pos_label = labels_for(class_names, 2)[1]
        curves = [(fpr, tpr, pos_label)]
    shown = []
    for k, (f, t, name) in enumerate(curves):
        f, t = f.numpy(), t.numpy()
        area = float(auc(f, t)) if len(f) > 1 else float("nan")
        display = RocCurveDisplay(fpr=f, tpr=t, roc_auc=area, pos_label=pos_label)
        shown.append(display.plot(ax=ax, name=name, plot_chance_level=k == len(curves) - 1))
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("ROC (test)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return shown


def plot_confusion(matrix: Any, path: Path, class_names: list[str] | None = None):
    """confusion_matrix.png: test counts, true class by row, predicted by column, ticks labelled
    with the class names. Returns scikit-learn's ConfusionMatrixDisplay (figure closed once saved)."""
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _pyplot()
    m = matrix.numpy()
    labels = labels_for(class_names, m.shape[0])
    side = max(5.0, 0.45 * len(labels))
    fig, ax = plt.subplots(figsize=(side, side * 0.9))
    display = ConfusionMatrixDisplay(confusion_matrix=m, display_labels=labels).plot(
        ax=ax,
        cmap="Blues",
        values_format="d",
        text_kw={"fontsize": 9 if len(labels) <= 10 else 7},
        xticks_rotation=45 if max(len(x) for x in labels) > 3 else "horizontal",
    )
    ax.set_title("Confusion matrix (test)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return display


def plot_loss_by_step(steps: list[tuple[int, float]], history: list[dict], path: Path) -> None:
    """loss_by_step.png: training loss at each logging step, validation loss at each validation."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    if steps:
        ax.plot([s for s, _ in steps], [v for _, v in steps], lw=1, label="train")
    val = [(h["step"], h["val/loss"]) for h in history if "val/loss" in h]
    if val:
        ax.plot([s for s, _ in val], [v for _, v in val], marker="o", ms=3, label="val")
    ax.set(xlabel="optimizer step", ylabel="loss (nats per token)", title="Loss by step")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_predictions(predicted: Any, true: Any, path: Path):
    """predicted_vs_true.png: each test row's prediction against its target, in the target's
    units, with the diagonal of perfect predictions. Returns scikit-learn's PredictionErrorDisplay."""
    from sklearn.metrics import PredictionErrorDisplay

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    display = PredictionErrorDisplay.from_predictions(
        y_true=true.numpy(),
        y_pred=predicted.numpy(),
        kind="actual_vs_predicted",
        ax=ax,
        scatter_kwargs={"alpha": 0.6, "s": 12},
    )
    ax.set_title("Predicted vs true (test)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return display
