"""Predictions of a trained run on raw inputs: table rows, images, audio clips, a text prompt;
and the predictions.csv that `bigtrain predict` writes.

One row per input: `input` (the row number, the image or audio file), `predicted` (the class name,
the regressed value in the target's units, or a clip's transcript), and for classifiers
`p_<class>` per class. Rows that
carry the target also get `target`, so a file of labelled rows can be checked by eye.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import torch

from bigtrain.config.errors import ConfigError
from bigtrain.data import preprocess
from bigtrain.util import write_text_atomic


def _rows(trained, out: torch.Tensor, names: list[str]) -> list[dict[str, Any]]:
    """Prediction rows for model outputs `out`, labelled by `names`."""
    if trained.module.task == "regression":
        return [{"input": n, "predicted": float(v)} for n, v in zip(names, out.tolist(), strict=True)]
    classes = trained.class_names or [str(i) for i in range(trained.module.num_classes)]
    if trained.module.task == "binary":
        out = torch.stack([1 - out, out], dim=1)
    rows = []
    for name, p in zip(names, out.tolist(), strict=True):
        best = max(range(len(p)), key=p.__getitem__)
        rows.append(
            {
                "input": name,
                "predicted": classes[best],
                **{f"p_{c}": v for c, v in zip(classes, p, strict=True)},
            }
        )
    return rows


def predict_table(trained, path: str | Path) -> list[dict[str, Any]]:
    """Rows of a CSV or Parquet file with the training table's feature columns (target optional)."""
    if not Path(path).is_file():
        raise ConfigError(f"{path} does not exist: give a CSV or Parquet file with the training columns")
    x, y, rows = preprocess.read_rows(trained.preprocessing, path)
    out = trained.outputs(torch.from_numpy(x).reshape(-1, *trained.input_shape))
    result = _rows(trained, out, [str(i + 1) for i in range(rows)])
    if y is not None:
        classes = trained.class_names
        for row, t in zip(result, y.tolist(), strict=True):
            row["target"] = classes[t] if classes and trained.module.task != "regression" else t
    return result


def predict_images(trained, path: str | Path) -> list[dict[str, Any]]:
    """An image file or every image below a folder."""
    files = preprocess.image_files(path)
    x = preprocess.read_images(trained.preprocessing, files)
    names = [str(f) for f in files]
    return _rows(trained, trained.outputs(x), names)


def predict_audio(trained, path: str | Path) -> list[dict[str, Any]]:
    """An audio file or every clip below a folder: the class with a probability per class, or
    (a CTC run) the greedy transcript."""
    from bigtrain.training.metrics import ctc_greedy

    files = preprocess.audio_files(path)
    x = preprocess.read_audio(trained.preprocessing, files)
    names = [str(f) for f in files]
    vocab = trained.preprocessing.get("vocabulary")
    if not vocab:
        return _rows(trained, trained.outputs(x), names)
    said = ctc_greedy(trained.outputs(x))
    return [
        {"input": n, "predicted": "".join(vocab[i] for i in labels)}
        for n, labels in zip(names, said, strict=True)
    ]


def generate_text(
    trained,
    prompt: str,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_k: int | None = None,
    seed: int = 0,
) -> str:
    """The prompt's continuation by the language model (greedy at temperature 0)."""
    from bigtrain.callbacks.samples import generate

    codec = preprocess.codec(trained.preprocessing, trained.run_dir)
    ids = codec.encode(prompt.encode("utf-8"))
    if len(ids) == 0:
        raise ConfigError("the prompt is empty: give some text to continue")
    tokens = torch.tensor(ids.tolist(), dtype=torch.long)[None]
    gen = torch.Generator().manual_seed(seed)
    context = trained.module.model.config.max_seq_len
    out = generate(
        trained.module.model,
        tokens,
        max_new_tokens,
        context=context,
        temperature=temperature,
        top_k=top_k,
        generator=gen,
    )
    return codec.decode(out[0, len(ids) :].tolist())


def write_csv(rows: list[dict[str, Any]], out: str | Path) -> Path:
    """predictions.csv, never over an existing file (written to a temporary name, then renamed)."""
    out = Path(out)
    if out.exists():
        raise ConfigError(f"{out} already exists: give another --out or move it away")
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out, text.getvalue())
    return out
