"""PNG plots in <run_dir>/plots/: loss and metric curves per epoch, ROC curve(s), confusion matrix.

Drawn on rank zero with matplotlib's Agg backend (no display needed). The epoch values come
from the module's `history`, which holds what was logged, synced over processes.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class Plots(pl.Callback):
    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        history = getattr(pl_module, "history", [])
        if not history:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        plot_curves(history, self.out_dir)

    @rank_zero_only
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        artifacts = getattr(pl_module, "test_artifacts", {})
        if not artifacts:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        plot_roc(artifacts["roc"], self.out_dir / "roc.png")
        plot_confusion(artifacts["confusion_matrix"], self.out_dir / "confusion_matrix.png")


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


def plot_roc(roc, path: Path) -> None:
    plt = _pyplot()
    fpr, tpr = roc
    fig, ax = plt.subplots(figsize=(5, 5))
    if isinstance(fpr, list):  # multiclass: one-vs-rest curve per class
        for k, (f, t) in enumerate(zip(fpr, tpr, strict=True)):
            ax.plot(f.numpy(), t.numpy(), lw=1, label=f"class {k}")
        ax.legend(fontsize=7, loc="lower right")
    else:
        ax.plot(fpr.numpy(), tpr.numpy(), lw=2)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(matrix, path: Path) -> None:
    plt = _pyplot()
    m = matrix.numpy()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    im = ax.imshow(m, cmap="Blues")
    fig.colorbar(im, ax=ax)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(
                j,
                i,
                int(m[i, j]),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if m[i, j] > m.max() / 2 else "black",
            )
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (test)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
