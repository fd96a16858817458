"""Bad inputs end with one line naming the fix and exit code 2, before a run directory exists.

Each case writes the damaged input into tmp_path (a table, an image folder, a text file, a run
directory, a checkpoint) and runs the real `python -m bigtrain` there: one `bigtrain: error:`
line, no traceback, no outputs/ folder, and the files that were there keep their bytes. Nothing
here trains; a multirun on SLURM meets an `sbatch` on PATH that refuses every job (or none).
"""

from __future__ import annotations

import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

import bigtrain
from conftest import bigtrain_cmd, make_cfg

LM = ["model=gpt/tiny", "metrics=lm"]
IMAGES = ["data=image_folder", "model=cnn/small", "data.image_size=8", "data.batch_size=4"]


def refused(cwd: Path, *args: str, env: dict | None = None) -> str:
    """The one error line of `bigtrain ARGS` run in `cwd`, after checking the exit code, that
    nothing but that line was printed to stderr, and that no run directory was made."""
    out = bigtrain_cmd(*args, cwd=cwd, env=env, timeout=120)
    assert out.returncode == 2, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bigtrain: error: "), out.stderr[-3000:]
    assert not (cwd / "outputs").exists()
    return lines[0].removeprefix("bigtrain: error: ")


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------
# Inputs, written for real.


def table(path: Path, rows: list[str], header: str = "a,b,y") -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def png(path: Path, side: int = 8, seed: int = 0) -> None:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height pixels, in a few bytes: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def image_root(root: Path, classes=("cat", "dog"), per_class: int = 6) -> Path:
    for c in classes:
        for i in range(per_class):
            png(root / c / f"{i}.png", seed=i)
    return root


# --------------------------------------------------------------------------------------------
# User data: tables, images, text.


def _binary_csv(tmp: Path) -> list[str]:
    (tmp / "t.csv").write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)))
    return ["data=csv", "data.path=t.csv", "data.target=y"]


def _latin1_csv(tmp: Path) -> list[str]:
    rows = "\n".join(f"{i},caf\xe9,{i % 2}" for i in range(60))
    (tmp / "t.csv").write_bytes(f"a,b,y\n{rows}\n".encode("latin-1"))
    return ["data=csv", "data.path=t.csv", "data.target=y", "data.categorical=[b]"]


def _damaged_parquet(tmp: Path) -> list[str]:
    pytest.importorskip("pyarrow")
    (tmp / "t.parquet").write_bytes(b"PAR1" + bytes(range(256)) * 4)
    return ["data=csv", "data.path=t.parquet", "data.target=y"]


def _no_features(tmp: Path) -> list[str]:
    table(tmp / "t.csv", [str(i % 2) for i in range(60)], header="y")
    return ["data=csv", "data.path=t.csv", "data.target=y"]


def _huge_values(tmp: Path) -> list[str]:
    table(tmp / "t.csv", [f"{1e308 if i % 2 else -1e308},{i},{i % 2}" for i in range(60)])
    return ["data=csv", "data.path=t.csv", "data.target=y"]


def _bomb_image(tmp: Path) -> list[str]:
    root = image_root(tmp / "imgs")
    (root / "cat" / "bomb.png").write_bytes(png_claiming(30000, 30000))
    return [*IMAGES, f"data.root={root}"]


def _undecodable_image(tmp: Path) -> list[str]:
    root = image_root(tmp / "imgs")
    (root / "dog" / "broken.png").write_bytes(b"not an image, whatever the name says")
    return [*IMAGES, f"data.root={root}"]


def _empty_class(tmp: Path) -> list[str]:
    root = image_root(tmp / "imgs")
    (root / "emu").mkdir()
    return [*IMAGES, f"data.root={root}"]


def _empty_text(tmp: Path) -> list[str]:
    (tmp / "corpus.txt").write_bytes(b"")
    return ["data=text", "data.paths=[corpus.txt]", *LM]


def _six_byte_text(tmp: Path) -> list[str]:
    (tmp / "corpus.txt").write_bytes(b"abcdef")
    return ["data=text", "data.paths=[corpus.txt]", *LM]


DATA_CASES = {
    "binary csv": (_binary_csv, "data.path=t.csv is not UTF-8 text (byte 0x"),
    "latin-1 csv": (_latin1_csv, "data.path=t.csv is not UTF-8 text (byte 0xe9 at offset 11)"),
    "damaged parquet": (_damaged_parquet, "data.path=t.parquet is not a Parquet file ("),
    "no feature columns": (_no_features, "data.path=t.csv has no feature columns, only y"),
    "values of 1e308": (_huge_values, "data.path=t.csv: numeric column 'a' has '"),
    "decompression bomb": (_bomb_image, "bomb.png is too large to decode safely"),
    "undecodable image": (_undecodable_image, "cannot read image"),
    "empty class folder": (_empty_class, "class folder"),
    "empty text": (_empty_text, "the train split of data=text has no window of 257 tokens"),
    "6-byte text": (_six_byte_text, "the train split of data=text has no window of 257 tokens"),
}


@pytest.mark.parametrize("case", DATA_CASES)
def test_bad_user_data_is_refused_before_the_run(tmp_path, case):
    setup, fragment = DATA_CASES[case]
    args = setup(tmp_path)
    before = snapshot(tmp_path)
    line = refused(tmp_path, *args)
    assert fragment in line, line
    assert snapshot(tmp_path) == before  # the inputs are read, never changed
    if case == "values of 1e308":
        assert "e+308' in row " in line and "beyond float32" in line and "rescale the column" in line
    if case == "empty class folder":
        assert "imgs/emu holds no .png/.jpg images" in line and "remove the folder" in line


def test_validation_counts_the_windows_the_text_module_cuts(tmp_path):
    """Byte tokens: the windows validation derives from file sizes are the data module's."""
    from bigtrain.data.corpus import byte_windows, expand_paths
    from bigtrain.data.text import TextDataModule

    (tmp_path / "a.txt").write_bytes(b"x" * 3000)
    (tmp_path / "b.txt").write_bytes(b"y" * 1234)
    for extra in (["data.max_bytes=2500"], []):
        cfg = make_cfg(
            ["data=text", f"data.paths=[{tmp_path}]", *LM, "data.seq_len=32", "data.batch_size=8", *extra]
        )
        dm = TextDataModule(cfg.data, cfg.seed)
        dm.setup()
        assert byte_windows(cfg.data, expand_paths(list(cfg.data.paths))) == dm.stats["windows"]


# --------------------------------------------------------------------------------------------
# Values of the config itself.

CONFIG_CASES = {
    "seed=4294967296": "seed=4294967296 is out of range: it must be at most 4294967295",
    "optim.lr=inf": "optim.lr=inf is not a finite number: set optim.lr to a finite value",
    "optim.lr=nan": "optim.lr=nan is",
    "callbacks.early_stopping.min_delta=inf": "min_delta=inf is not a finite number",
    "tricks.label_smoothing=nan": "tricks.label_smoothing=nan is",
    "name=../../escape": "name=../../escape is not a folder name (it holds /)",
    "name=..": "name=.. is not a folder name",
    "resume=": "resume= is empty: give the run directory to continue",
    "hydra.run.dir=": "hydra.run.dir is empty: give a folder",
    "hydra.run.dir=${oc.env:BIGTRAIN_TEST_UNSET}": "the environment variable BIGTRAIN_TEST_UNSET is not set",
    "hydra.run.dir=runs/${nokey}": "cannot be resolved (Interpolation key 'nokey' not found)",
    "hydra.output_subdir=/elsewhere": "hydra.output_subdir=/elsewhere would put the run's config outside",
    "hydra.output_subdir=../up": "hydra.output_subdir=../up would put the run's config outside",
}


@pytest.mark.parametrize("override", CONFIG_CASES)
def test_bad_values_and_paths_are_refused(tmp_path, override):
    line = refused(tmp_path, override)
    assert CONFIG_CASES[override] in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # not even the current directory


@pytest.mark.parametrize("data, val, test", [("digits", 0.5, 0.5), ("csv", 0.7, 0.4), ("text", 0.5, 0.5)])
def test_held_out_fractions_must_leave_training_data(tmp_path, data, val, test):
    table(tmp_path / "t.csv", [f"{i},{i % 3},{i % 2}" for i in range(60)])
    (tmp_path / "corpus.txt").write_bytes(b"some text " * 10_000)
    args = {
        "digits": [],
        "csv": ["data=csv", "data.path=t.csv", "data.target=y"],
        "text": ["data=text", "data.paths=[corpus.txt]", *LM],
    }[data]
    line = refused(tmp_path, *args, f"data.val_fraction={val}", f"data.test_fraction={test}")
    assert line.startswith(f"data.val_fraction={val} + data.test_fraction={test} = "), line
    assert "leaves no training data: lower them so that they sum below 1" in line


def test_the_python_api_raises_config_error_for_the_same_mistakes(tmp_path):
    with pytest.raises(bigtrain.ConfigError) as e:
        bigtrain.train(["seed=4294967296", "optim.lr=inf", "name=a/b"], run_dir=tmp_path / "run")
    assert len(e.value.lines) == 2 and not (tmp_path / "run").exists()  # schema first: name waits
    with pytest.raises(bigtrain.ConfigError) as e:
        bigtrain.train(
            ["name=a/b", "data.val_fraction=0.6", "data.test_fraction=0.4"], run_dir=tmp_path / "run"
        )
    assert [line.split(" ", 1)[0] for line in e.value.lines] == ["data.val_fraction=0.6", "name=a/b"]
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------
# Checkpoints and run directories.


def _checkpoint(path: Path, epoch: int, step: int) -> Path:
    import torch

    state = {"state_dict": {"w": torch.zeros(2)}, "epoch": epoch, "global_step": step, "loops": {}}
    torch.save(state, path)
    return path


def test_a_checkpoint_beyond_max_epochs_says_to_raise_them(tmp_path):
    _checkpoint(tmp_path / "e12.ckpt", epoch=11, step=120)  # saved in the 12th epoch
    line = refused(tmp_path, "ckpt_path=e12.ckpt", "trainer.max_epochs=2")
    assert line == (
        "ckpt_path=e12.ckpt was saved in epoch 12, beyond trainer.max_epochs=2: raise trainer.max_epochs "
        "above 12 to train on from it (it counts the epochs already trained)"
    )
    with pytest.raises(bigtrain.ConfigError) as e:  # the same check, in this process
        make_cfg([f"ckpt_path={tmp_path / 'e12.ckpt'}", "trainer.max_epochs=-1", "trainer.max_steps=50"])
    assert "was saved at step 120, beyond trainer.max_steps=50: raise trainer.max_steps above 120" in str(
        e.value
    )


OVERRIDES = ["+debug=fast", "callbacks.print_config=false"]


def run_dir(tmp_path: Path) -> Path:
    """A run directory as the command leaves it: .hydra/, metrics.csv, checkpoints/."""
    run = tmp_path / "runs" / "r1"
    hydra_dir = run / ".hydra"
    hydra_dir.mkdir(parents=True)
    (hydra_dir / "config.yaml").write_text(OmegaConf.to_yaml(bigtrain.compose(OVERRIDES)))
    (hydra_dir / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(OVERRIDES)))
    (hydra_dir / "hydra.yaml").write_text("hydra:\n  runtime:\n    config_sources: []\n")
    (run / "metrics.csv").write_text("epoch,step,train/loss\n0,3,2.1\n")
    (run / "checkpoints").mkdir()
    return run


RUN_DIR_DAMAGE = {
    "config.yaml not YAML": (
        ".hydra/config.yaml",
        b"\x00\xff: [ {{",
        ".hydra/config.yaml is not readable YAML",
    ),
    "config.yaml a list": (
        ".hydra/config.yaml",
        b"- 1\n- 2\n",
        ".hydra/config.yaml should hold the run's config",
    ),
    "overrides.yaml not YAML": (
        ".hydra/overrides.yaml",
        b"- a: [b\n:::",
        ".hydra/overrides.yaml is not readable",
    ),
    "overrides.yaml a mapping": (".hydra/overrides.yaml", b"a: 1\n", "overrides.yaml should hold the list"),
    "hydra.yaml not YAML": (
        ".hydra/hydra.yaml",
        b"hydra: [1, 2\n\x00",
        ".hydra/hydra.yaml is not readable YAML",
    ),
    "hydra.yaml of another shape": (
        ".hydra/hydra.yaml",
        b"hydra: {runtime: {config_sources: 3}}\n",
        "should list",
    ),
    "binary metrics.csv": (
        "metrics.csv",
        bytes(range(128, 256)) * 8,
        "metrics.csv is not CSV text (byte 0x80",
    ),
    "checkpoints a file": (
        "checkpoints",
        b"not a folder\n",
        "checkpoints is a file, not a folder: move it away",
    ),
}


@pytest.mark.parametrize("case", RUN_DIR_DAMAGE)
def test_resume_of_a_damaged_run_directory_is_one_line_and_changes_nothing(tmp_path, case):
    run = run_dir(tmp_path)
    name, data, fragment = RUN_DIR_DAMAGE[case]
    if name == "checkpoints":
        (run / name).rmdir()
    (run / name).write_bytes(data)
    before = snapshot(tmp_path)
    line = refused(tmp_path, f"resume={run.relative_to(tmp_path)}", "trainer.max_epochs=2")
    assert line.startswith(f"resume={run}: ") and fragment in line, line
    assert "restore it" in line or "move it away" in line
    assert snapshot(tmp_path) == before


def test_a_new_run_into_a_folder_whose_checkpoints_is_a_file_is_refused(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "checkpoints").write_text("x")
    line = refused(tmp_path, "hydra.run.dir=r")
    assert line.startswith("hydra.run.dir=r: checkpoints is a file, not a folder")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["checkpoints"]


# --------------------------------------------------------------------------------------------
# A multirun on SLURM.

SWEEP = ["--multirun", "hydra/launcher=slurm", "optim.lr=1e-3,3e-3", "hydra.sweep.dir=sweep"]


def fake_slurm(folder: Path) -> dict:
    """PATH with SLURM's `srun` and an `sbatch` that refuses every job as SLURM does; both note
    each call in folder/calls."""
    folder.mkdir()
    refuse = "echo 'sbatch: error: invalid partition specified: nope' >&2; exit 1"
    for tool, answer in (("sbatch", refuse), ("srun", "exit 1")):
        (folder / tool).write_text(f"#!/bin/sh\necho {tool} >> '{folder}/calls'\n{answer}\n")
        (folder / tool).chmod(0o755)
    return {"PATH": f"{folder}{os.pathsep}{Path(sys.executable).parent}"}


def test_a_slurm_multirun_without_sbatch_is_refused_before_the_sweep_folder(tmp_path):
    (tmp_path / "bin").mkdir()
    line = refused(tmp_path, *SWEEP, env={"PATH": str(tmp_path / "bin")})
    assert line.startswith("hydra/launcher=slurm submits the jobs with SLURM's sbatch and srun, and ")
    assert "use hydra/launcher=local" in line and not (tmp_path / "sweep").exists()


def test_a_slurm_multirun_that_sbatch_refuses_is_one_line(tmp_path):
    env = fake_slurm(tmp_path / "bin")
    out = bigtrain_cmd(*SWEEP, "hydra.launcher.partition=nope", cwd=tmp_path, env=env, timeout=120)
    assert out.returncode == 2, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert lines == [
        "bigtrain: error: SLURM refused the jobs (sbatch: error: invalid partition specified: nope): set "
        "hydra.launcher.partition, timeout_min, nodes or gpus_per_node to what the cluster offers (sinfo "
        "lists its partitions), or use hydra/launcher=local to run them here"
    ], out.stderr[-3000:]
    assert (tmp_path / "bin" / "calls").read_text() == "sbatch\n"
    assert not list((tmp_path / "sweep").glob("[0-9]*"))  # no job folder: nothing ran


def test_a_slurm_dry_run_plans_here_and_submits_nothing(tmp_path):
    env = fake_slurm(tmp_path / "bin")
    out = bigtrain_cmd(*SWEEP, "dry_run=true", cwd=tmp_path, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "nothing is submitted to SLURM" in out.stdout
    assert sorted(p.parent.name for p in (tmp_path / "sweep").glob("*/plan.json")) == ["0", "1"]
    assert not (tmp_path / "bin" / "calls").exists() and not list(tmp_path.rglob("results.json"))
