"""Task -> torchmetrics MetricCollection, with the keys used in logs and results.json.

Keys: acc, precision, recall, f1, auroc; for language models (task "lm") acc, ppl, bpb; for
regression mae, rmse, r2 (in the target's units, as scikit-learn's mean_absolute_error,
root_mean_squared_error and r2_score; a regression run whose metrics.names lists only
classification metrics, the default, gets all three). Accuracy is the plain fraction correct (micro), as
scikit-learn's accuracy_score; for multiclass tasks precision, recall, F1 and AUROC are macro
averages (one-vs-rest for AUROC), as scikit-learn's `average="macro"`. Binary tasks threshold the
sigmoid at 0.5 and score the positive class.

Language models: `acc` is token accuracy (argmax == next token, micro over all tokens). `ppl`
(exp of the mean token cross-entropy) and `bpb` (bits per byte: loss / ln 2 / bytes per token)
are functions of the token-weighted mean loss, so the module derives them from the synced loss
and they are exact on any number of devices; see `lm_from_loss`.

Transcripts (task "ctc"): cer and wer, torchmetrics' character and word error rates (edit
distance over the reference's characters or words, summed over the epoch). Greedy decoding
(`ctc_greedy`) takes each frame's best label, merges repeats and drops blanks. The rates are
computed on label indices written as text (`label_text`: the space label is a space, every other
label one character of its own), which gives the rates of the real characters without the
module knowing the alphabet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torchmetrics
from torchmetrics import classification as C
from torchmetrics import regression as R
from torchmetrics import text as T
from torchmetrics.aggregation import CatMetric

from bigtrain.config import REGRESSION_METRICS

CTC_METRICS = ("cer", "wer")  # the metric names of transcripts


def build_metrics(task: str, num_classes: int, names: Sequence[str]) -> torchmetrics.MetricCollection:
    """Metrics that take probabilities (binary: P(class 1) of shape (N,); multiclass: (N, C))."""
    # validate_args=False: every update would check its labels' range with torch.unique and the
    # probabilities' range, a tenth of the update on a CPU and a device-to-host sync per batch on
    # a GPU. The module hands over probabilities (softmax or sigmoid), and every data module
    # encodes labels as 0..classes-1 when it loads them (a label that is not is an error there).
    v = {"validate_args": False}
    if task == "binary":
        table = {
            "acc": lambda: C.BinaryAccuracy(**v),
            "precision": lambda: C.BinaryPrecision(**v),
            "recall": lambda: C.BinaryRecall(**v),
            "f1": lambda: C.BinaryF1Score(**v),
            "auroc": lambda: C.BinaryAUROC(**v),
        }
    elif task == "multiclass":
        k = num_classes
        table = {
            "acc": lambda: C.MulticlassAccuracy(num_classes=k, average="micro", **v),
            "precision": lambda: C.MulticlassPrecision(num_classes=k, average="macro", **v),
            "recall": lambda: C.MulticlassRecall(num_classes=k, average="macro", **v),
            "f1": lambda: C.MulticlassF1Score(num_classes=k, average="macro", **v),
            "auroc": lambda: C.MulticlassAUROC(num_classes=k, average="macro", **v),
        }
    elif task == "regression":
        table = {
            "mae": lambda: R.MeanAbsoluteError(),
            "rmse": lambda: R.MeanSquaredError(squared=False),
            "r2": lambda: R.R2Score(),
        }
        names = [n for n in names if n in table] or list(REGRESSION_METRICS)
    elif task == "lm":
        table = {"acc": lambda: C.MulticlassAccuracy(num_classes=num_classes, average="micro", **v)}
        names = [n for n in names if n in table]
    elif task == "ctc":
        table = {"cer": lambda: T.CharErrorRate(), "wer": lambda: T.WordErrorRate()}
        names = [n for n in names if n in table] or list(CTC_METRICS)
    else:
        raise ValueError(f"unknown task {task!r}")
    # compute_groups=False: the groups would share state between metrics, which is only a saving
    # for large collections and makes state syncing under DDP harder to reason about.
    return torchmetrics.MetricCollection({n: table[n]() for n in names}, compute_groups=False)


def build_curves(task: str, num_classes: int) -> torchmetrics.MetricCollection:
    """Test-time artefacts: the confusion matrix and the ROC curve(s); for regression every
    prediction and target (for the predicted-vs-true plot)."""
    if task in ("lm", "ctc"):
        return torchmetrics.MetricCollection({}, compute_groups=False)
    if task == "regression":
        return torchmetrics.MetricCollection(
            {"predicted": CatMetric(), "true": CatMetric()}, compute_groups=False
        )
    if task == "binary":
        return torchmetrics.MetricCollection(
            {"confusion_matrix": C.BinaryConfusionMatrix(), "roc": C.BinaryROC()}, compute_groups=False
        )
    return torchmetrics.MetricCollection(
        {
            "confusion_matrix": C.MulticlassConfusionMatrix(num_classes=num_classes),
            "roc": C.MulticlassROC(num_classes=num_classes),
        },
        compute_groups=False,
    )


def lm_from_loss(loss: float, names: Sequence[str], bytes_per_token: float) -> dict[str, float]:
    """Perplexity and bits per byte from a mean token cross-entropy in nats."""
    out = {}
    if "ppl" in names:
        out["ppl"] = math.exp(min(loss, 80.0))  # exp(80) ~ 5e34: a diverged run stays finite
    if "bpb" in names:
        out["bpb"] = loss / math.log(2) / bytes_per_token
    return out


def ctc_greedy(logits, blank: int = 0) -> list[list[int]]:
    """Best path decoding of (B, T, labels) logits: each frame's argmax, repeats merged, blanks
    dropped."""
    best = logits.argmax(-1)
    keep = best != blank
    keep[:, 1:] &= best[:, 1:] != best[:, :-1]
    return [row[mask].tolist() for row, mask in zip(best.cpu(), keep.cpu(), strict=True)]


def label_text(labels: list[int], space: int = 1) -> str:
    """Label indices as text for the error rates: the space label a space, each other label one
    private-use character (U+E000 + index), so words split where the transcript's words do."""
    return "".join(" " if i == space else chr(0xE000 + i) for i in labels)
