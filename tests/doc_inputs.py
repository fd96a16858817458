"""Inputs the documents name (tables, image folders, texts, a tokenizer, runs to resume), made
from data that ships with scikit-learn, Pillow, tokenizers and the standard library, for
tests/test_docs.py. Keyed in INPUTS by the name a document uses."""

from __future__ import annotations

import csv
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from doc_inputs_audio import AUDIO_INPUTS

# ---------------------------------------------------------------------------------------------
# Inputs the documents name, made from data that ships with the installed packages.


class Runs:
    """Commands already run in this pytest session, each in its own folder: the same command in several
    documents runs once (each location still gets its test), and inputs made by a documented
    command (a run to resume, a checkpoint to export) reuse that run."""

    def __init__(self, base: Path, execute: Callable, limits: Callable):
        # execute(name, args, cwd) runs a command; limits(args) appends the duration limits.
        self.base, self.execute, self.limits = base, execute, limits
        self.done: dict[tuple, tuple[subprocess.CompletedProcess, Path]] = {}
        self.inputs: dict[str, Path] = {}

    def once(
        self, name: str, args: list[str], cwd: Path | None = None
    ) -> tuple[subprocess.CompletedProcess, Path]:
        key = (name, tuple(args))
        if key not in self.done:
            if cwd is None:
                cwd = self.base / f"run{len(self.done)}"
                cwd.mkdir()
            self.done[key] = (self.execute(name, args, cwd), cwd)
        return self.done[key]


def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images * (255 / 16)).astype("uint8"), digits.target


def _png(path: Path, grey, size: int, colour: tuple[float, float, float] | None = None) -> None:
    """A digit as a PNG of size x size pixels: grey, or tinted with an RGB colour."""
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(grey, mode="L").resize((size, size), Image.Resampling.BILINEAR)
    if colour is not None:
        rgb = np.asarray(image, dtype="float32")[..., None] * np.asarray(colour, dtype="float32")
        image = Image.fromarray(rgb.astype("uint8"), mode="RGB")
    image.save(path)


def _split(n: int) -> str:
    """70/15/15 by position."""
    return "train" if n % 20 < 14 else "val" if n % 20 < 17 else "test"


def class_folders(names: dict[int, str], size: int) -> Callable:
    """root/<class>/<n>.png: scikit-learn's digits (those in `names`), tinted RGB images."""

    def build(root: Path, runs: Runs) -> None:
        images, targets = _digits()
        for n, (grey, target) in enumerate(zip(images, targets, strict=True)):
            if int(target) in names:
                tint = ((n % 3 + 1) / 3, ((n + 1) % 3 + 1) / 3, ((n + 2) % 3 + 1) / 3)
                _png(root / names[int(target)] / f"{n:04d}.png", grey, size, tint)

    return build


def split_folders(size: int) -> Callable:
    """root/{train,val,test}/<digit>/<n>.png: scikit-learn's digits, grey."""

    def build(root: Path, runs: Runs) -> None:
        images, targets = _digits()
        for n, (grey, target) in enumerate(zip(images, targets, strict=True)):
            _png(root / _split(n) / str(int(target)) / f"{n:04d}.png", grey, size)

    return build


def _rank(values):
    """Each value's rank as a fraction in (0, 1)."""
    import numpy as np

    return (np.argsort(np.argsort(values, kind="stable"), kind="stable") + 0.5) / len(values)


def _patients() -> dict[str, list]:
    """scikit-learn's breast cancer table (569 patients; `diagnosis` is the target) with the
    columns the documents name. age, weight, smoker and region are not in that table: they are
    derived from measured columns of the same rows (ranks and quantiles), so they carry signal.
    smoker (0, 1) and region (1 to 4) are codes: numeric features unless data.categorical lists
    them, as the documents' commands with and without data.categorical expect."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    table = {name.replace(" ", "_"): data.data[:, i] for i, name in enumerate(data.feature_names)}
    table["diagnosis"] = np.array(["malignant", "benign"])[data.target]
    table["age"] = np.round(30 + 50 * _rank(table["mean_texture"])).astype(int)
    table["weight"] = np.round(50 + 60 * _rank(table["mean_area"]), 1)
    table["smoker"] = (table["worst_smoothness"] > np.median(table["worst_smoothness"])).astype(int)
    table["region"] = 1 + (_rank(table["mean_symmetry"]) * 4).astype(int)
    table["split"] = np.array([_split(n) for n in range(len(data.target))])
    return {name: column.tolist() for name, column in table.items()}


def diabetes_table(path: Path, runs: Runs) -> None:
    """scikit-learn's diabetes table in its raw units: ten features and `progression`, the
    disease progression a year later (25 to 346), a numeric target to regress."""
    from sklearn.datasets import load_diabetes

    data = load_diabetes(scaled=False)
    table = {name: data.data[:, i].tolist() for i, name in enumerate(data.feature_names)}
    table["progression"] = data.target.tolist()
    _write_table(path, table)


def _write_table(path: Path, table: dict[str, list]) -> None:
    if path.suffix == ".parquet":
        import pyarrow
        import pyarrow.parquet

        pyarrow.parquet.write_table(pyarrow.table(table), path)
        return
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(table)
        writer.writerows(zip(*table.values(), strict=True))


def patients(path: Path, runs: Runs) -> None:
    """The patients table; with its `split` column (train / val / test) when the name says so."""
    table = _patients()
    if "split" not in path.stem:
        del table["split"]
    _write_table(path, table)


def patients_split(split: str) -> Callable:
    """One split of the patients table, without the split column."""

    def build(path: Path, runs: Runs) -> None:
        table = _patients()
        keep = [s == split for s in table.pop("split")]
        _write_table(path, {k: [v for v, y in zip(col, keep, strict=True) if y] for k, col in table.items()})

    return build


def wine_table(path: Path, runs: Runs) -> None:
    """scikit-learn's wine table (178 rows): `label` (the cultivar), and `colour` in place of the
    measured colour intensity: its tertile, 1 to 3, numeric unless listed in data.categorical."""
    from sklearn.datasets import load_wine

    data = load_wine()
    names = list(data.feature_names)
    intensity = data.data[:, names.index("color_intensity")]
    table = {n: data.data[:, i].tolist() for i, n in enumerate(names) if n != "color_intensity"}
    table["colour"] = (1 + (_rank(intensity) * 3).astype(int)).tolist()
    table["label"] = [f"cultivar_{t}" for t in data.target]
    _write_table(path, table)


def _stdlib_sources(package: str) -> list[Path]:
    import sysconfig

    return sorted(Path(sysconfig.get_paths()["stdlib"], package).glob("*.py"))


def stdlib_texts(folder: Path, runs: Runs | None = None) -> None:
    """Text files: the source of the standard library's email package (360 KB)."""
    folder.mkdir(parents=True, exist_ok=True)
    for source in _stdlib_sources("email"):
        (folder / f"{source.stem}.txt").write_text(source.read_text(encoding="utf-8"), encoding="utf-8")


def stdlib_markdown(pattern: Path, runs: Runs) -> None:
    """Markdown files in the glob's folder: the docstrings of standard-library modules."""
    import email
    import json as json_module
    import textwrap

    pattern.parent.mkdir(parents=True, exist_ok=True)
    for module in (email, json_module, textwrap, shlex, shutil):
        text = f"# {module.__name__}\n\n{module.__doc__}\n"
        (pattern.parent / f"{module.__name__}.md").write_text(text, encoding="utf-8")


def tokenizer_json(path: Path, runs: Runs) -> None:
    """A byte-level BPE tokenizer (512 tokens, with <|endoftext|>) trained here on the json
    package's source."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],  # the end-of-document token bigtrain-tokens appends
        show_progress=False,
    )
    tokenizer.train([str(p) for p in _stdlib_sources("json")], trainer)
    tokenizer.save(str(path))


def _email_docs() -> list[str]:
    return [p.read_text(encoding="utf-8") for p in _stdlib_sources("email")]


def jsonl_rows(path: Path, runs: Runs) -> None:
    """A JSONL file: a {"text", "id"} object per email-package module."""
    import json as json_module

    rows = (json_module.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(_email_docs()))
    path.write_text("".join(rows), encoding="utf-8")


def parquet_rows(path: Path, runs: Runs) -> None:
    """A Parquet table with the email package's modules in both a `text` and a `body` column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = _email_docs()
    pq.write_table(pa.table({"text": docs, "body": docs}), path, row_group_size=8)


def saved_dataset(path: Path, runs: Runs) -> None:
    """A folder saved by datasets' save_to_disk: a DatasetDict whose train split has a text column."""
    import datasets

    datasets.disable_progress_bars()
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": _email_docs()})}).save_to_disk(
        str(path)
    )


def written_corpus(*inputs: str):
    """A corpus folder written by bigtrain-tokens from `inputs` (made beside it) with tok.json."""
    makers = {"texts": stdlib_texts, "pages.jsonl": jsonl_rows, "articles.parquet": parquet_rows}

    def build(path: Path, runs: Runs) -> None:
        key = f"corpus:{path.name}"
        if key not in runs.inputs:
            made = runs.base / key.replace(":", "_")
            made.mkdir(parents=True)
            for name in inputs:
                makers[name](made / name, runs)
            tokenizer_json(made / "tok.json", runs)
            out = runs.execute("bigtrain-tokens", ["write", "out", *inputs, "--tokenizer", "tok.json"], made)
            assert out.returncode == 0, out.stderr
            runs.inputs[key] = made / "out"
        shutil.copytree(runs.inputs[key], path)

    return build


def config_dir(folder: Path, runs: Runs) -> None:
    """A --config-dir with one experiment of its own, `mine`."""
    (folder / "experiment").mkdir(parents=True)
    (folder / "experiment" / "mine.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n  - override /data: breast_cancer\n  - override /model: mlp/tiny\n\n"
        "name: mine\noptim:\n  lr: 3.0e-3\n"
    )


def example_files(document: Path) -> dict[str, str]:
    """The files of a document's example: each code block whose first line is `# path/of/file`
    (under my_pkg/ or my_configs/), by that path, as the document shows them."""
    import re

    blocks = re.findall(
        r"^```\w*\n# ((?:my_pkg|my_configs)/\S+)\n(.*?)^```", document.read_text(), re.M | re.S
    )
    return {path: body for path, body in blocks}


def extending_example(folder: Path, runs: Runs) -> None:
    """docs/extending.md's project: my_pkg/ (model, data module, callback) next to the config
    folder my_configs/, written from the document itself."""
    document = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
    files = example_files(document)
    assert files, "docs/extending.md shows no example files"
    for path, body in files.items():
        target = folder.parent / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body)


def documented_run(*args: str) -> Callable:
    """The run directory of a documented training command (shortened by LIMITS as its own test
    runs it, and run once for both)."""

    def build(run_dir: Path, runs: Runs) -> None:
        full = runs.limits(list(args))
        out, cwd = runs.once("bigtrain", full)
        assert out.returncode == 0, f"`bigtrain {shlex.join(full)}` failed:\n{out.stderr[-3000:]}"
        (made,) = {p.parent for p in cwd.rglob("results.json")}
        shutil.copytree(made, run_dir)

    return build


def table_run(table: str, build_table: Callable, *args: str) -> Callable:
    """The run directory of a documented training command on a table, trained where the table
    was written (shortened by LIMITS, and run once for all the commands that use it)."""

    def build(run_dir: Path, runs: Runs) -> None:
        cwd = runs.base / f"table_run_{run_dir.name}"
        if not cwd.exists():
            cwd.mkdir()
            build_table(cwd / table, runs)
        full = runs.limits(list(args))
        # The same command in a document may have run already, in its own folder.
        out, ran_in = runs.once("bigtrain", full, cwd)
        assert out.returncode == 0, f"`bigtrain {shlex.join(full)}` failed:\n{out.stderr[-3000:]}"
        (made,) = {p.parent for p in ran_in.rglob("results.json")}
        shutil.copytree(made, run_dir)

    return build


def new_rows(path: Path, runs: Runs) -> None:
    """The last 100 rows of the diabetes table: rows a documented run's evaluation has not seen."""
    full = path.with_name("diabetes_all.csv")
    diabetes_table(full, runs)
    lines = full.read_text().splitlines()
    path.write_text("\n".join([lines[0], *lines[-100:]]) + "\n")


def digit_png(path: Path, runs: Runs) -> None:
    """A handwritten 3 from scikit-learn's digits as an 8x8 grey PNG (values 0-16 as 0-255)."""
    images, labels = _digits()
    from PIL import Image

    Image.fromarray(images[list(labels).index(3)], mode="L").save(path)


def hf_folder(*args: str) -> Callable:
    """A Hugging Face folder exported from the run of a documented training command."""

    def build(path: Path, runs: Runs) -> None:
        import sys

        trained = runs.base / f"hf_source_{path.name}"
        if not trained.exists():
            documented_run(*args)(trained, runs)
        cmd = [sys.executable, "-m", "bigtrain.runs.export", str(trained), str(path), "--format", "hf"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]

    return build


def transformers_folder(path: Path, runs: Runs) -> None:
    """docs/lm.md's folder of transformers' GPT-2 or LLaMA (by its name): defaults but the sizes."""
    import transformers as t

    if path.name.startswith("gpt2"):
        t.GPT2LMHeadModel(t.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=256)).save_pretrained(path)
    else:
        sizes = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=172)
        t.LlamaForCausalLM(t.LlamaConfig(**sizes, vocab_size=256)).save_pretrained(path)


def absent(path: Path, runs: Runs) -> None:
    """Nothing: the document names a path that does not exist, to show the error it gives."""


# name as the documents write it -> (where it is made, relative to the working directory, and how).
INPUTS: dict[str, tuple[str, Callable]] = {
    "table.csv": ("table.csv", wine_table),
    "diabetes.csv": ("diabetes.csv", diabetes_table),
    "new_rows.csv": ("new_rows.csv", new_rows),
    "digit.png": ("digit.png", digit_png),
    # docs/using.md trains these runs, then evaluates and predicts with them
    "outputs/digits": ("outputs/digits", documented_run("hydra.run.dir=outputs/digits")),
    "outputs/diabetes": (
        "outputs/diabetes",
        table_run(
            "diabetes.csv",
            diabetes_table,
            "data=csv",
            "data.path=diabetes.csv",
            "data.target=progression",
            "hydra.run.dir=outputs/diabetes",
        ),
    ),
    "outputs/gpt": ("outputs/gpt", documented_run("+experiment=gpt_stdlib", "hydra.run.dir=outputs/gpt")),
    "patients.csv": ("patients.csv", patients),
    "patients_split.csv": ("patients_split.csv", patients),
    "patients.parquet": ("patients.parquet", patients),
    "train.csv": ("train.csv", patients_split("train")),
    "val.csv": ("val.csv", patients_split("val")),
    "test.csv": ("test.csv", patients_split("test")),
    "photos": ("photos", class_folders({d: f"digit_{d}" for d in range(10)}, 32)),
    "pets": ("pets", class_folders({0: "cat", 1: "dog"}, 32)),
    "letters": ("letters", split_folders(28)),
    "cifar_like": ("cifar_like", class_folders({d: f"class_{d}" for d in range(10)}, 32)),
    "~/my_configs": ("home/my_configs", config_dir),
    # docs/extending.md: its config folder, and its package my_pkg/ beside it (or a class of it)
    "my_configs": ("my_configs", extending_example),
    "my_pkg.nets.ResidualMLP": ("my_configs", extending_example),
    # docs/reliability.md's first command makes the run the next two resume
    "outputs/long": ("outputs/long", documented_run("+experiment=seed", "hydra.run.dir=outputs/long")),
    # docs/lm.md trains a small GPT, then exports it as a Hugging Face folder
    "outputs/gpt_tiny": (
        "outputs/gpt_tiny",
        documented_run("model=gpt/tiny", "hydra.run.dir=outputs/gpt_tiny"),
    ),
    "no_such_folder": ("no_such_folder", absent),  # docs/lm.md: the error for a missing folder
    "gpt_tiny_hf": ("gpt_tiny_hf", hf_folder("model=gpt/tiny", "hydra.run.dir=outputs/gpt_tiny")),
    "gpt2_hf": ("gpt2_hf", transformers_folder),  # docs/lm.md's model=hf
    "llama_hf": ("llama_hf", transformers_folder),
    # outputs/NAME/RUN: the run directory of the README's `bigtrain`
    "outputs/NAME/RUN/checkpoints/last.ckpt": ("outputs/NAME/RUN", documented_run()),
    "my_texts/": ("my_texts", stdlib_texts),
    "more/*.md": ("more/*.md", stdlib_markdown),
    "tok.json": ("tok.json", tokenizer_json),
    # docs/lm.md: inputs of bigtrain-tokens, and the corpora its training commands read
    "pages.jsonl": ("pages.jsonl", jsonl_rows),
    "articles.parquet": ("articles.parquet", parquet_rows),
    "my_dataset": ("my_dataset", saved_dataset),
    "corpus": ("corpus", written_corpus("texts")),
    "rows": ("rows", written_corpus("pages.jsonl", "articles.parquet")),
    **AUDIO_INPUTS,  # docs/audio.md's (doc_inputs_audio.py)
}
