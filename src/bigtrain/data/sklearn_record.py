"""scikit-learn's bundled sets as a data source (data/source.py): digits (8x8 images) and
breast_cancer (30 features), known without loading them. Its data module: data/sklearn.py."""

from __future__ import annotations

from typing import Any

from bigtrain.data.source import DataSpec, Source

SPECS = {
    "digits": DataSpec(input_shape=(1, 8, 8), num_classes=10, task="multiclass"),
    "breast_cancer": DataSpec(input_shape=(30,), num_classes=2, task="binary"),
}
SAMPLES = {"digits": 1797, "breast_cancer": 569}


def _train_samples(cfg: Any) -> int:
    from bigtrain.data.batches import split_train_size

    d = cfg.data
    return split_train_size(SAMPLES[d.name], d.val_fraction, d.test_fraction)


SOURCE = Source(
    name="sklearn",
    choices={"digits": "image", "breast_cancer": "features"},
    module="bigtrain.data.sklearn",
    spec=lambda cfg: SPECS[cfg.data.name],
    train_samples=_train_samples,
)
