"""Checkpoints, resume and bad input around them: atomic saves under a real SIGKILL, exact
resume at an epoch boundary and mid-epoch, corrupt and untrusted checkpoints, run directories
that cannot be written."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import bigtrain
from bigtrain.cli import main
from bigtrain.data.tensors import TensorLoader
from bigtrain.runs.checkpointing import inspect_checkpoint, newest_intact
from bigtrain.training.checkpoint_files import PARTIAL_SUFFIX, check_digest
from conftest import QUIET, bigtrain_cmd, read_results

# 5 optimizer steps an epoch, constant learning rate: extending a run by epochs keeps the math
# of an uninterrupted run (a cosine schedule is stretched to the new length on resume).
SHORT = [
    *QUIET,
    "model=mlp/tiny",
    "sched=constant",
    "callbacks.plots=false",
    "trainer.limit_train_batches=5",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "callbacks.checkpoint.every_n_train_steps=3",
]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    # Our own checkpoints load with weights_only=True: no pickled code inside.
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def _assert_same_run(a: tuple[dict, Path], b: tuple[dict, Path]) -> None:
    wa, wb = _weights(a[1]), _weights(b[1])
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    assert a[0]["val"] == b[0]["val"] and a[0]["test"] == b[0]["test"]
    assert a[0]["global_step"] == b[0]["global_step"] and a[0]["epochs"] == b[0]["epochs"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[dict, Path]:
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    return bigtrain.train([*SHORT, "trainer.max_epochs=4"], run_dir=run_dir), run_dir


def test_two_epochs_resumed_for_two_more_equal_four(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    first = bigtrain.train([*SHORT, "trainer.max_epochs=2"], run_dir=run_dir)
    assert first["resumed"] == 0 and first["global_step"] == 10
    resumed = bigtrain.resume(run_dir, ["trainer.max_epochs=4"])
    assert resumed["resumed"] == 1 and read_results(run_dir)["resumed"] == 1
    _assert_same_run(uninterrupted, (resumed, run_dir))
    overrides = OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")
    assert "trainer.max_epochs=4" in overrides and "trainer.max_epochs=2" not in overrides


def test_mid_epoch_step_checkpoint_resumes_the_data_order(uninterrupted, tmp_path, capsys):
    run_dir = tmp_path / "run"
    # Stops at step 8: epoch 1, 3 of its 5 batches done; step checkpoints at 3 and 6 (latest kept).
    bigtrain.train([*SHORT, "trainer.max_epochs=4", "trainer.max_steps=8"], run_dir=run_dir)
    ckpts = run_dir / "checkpoints"
    for path in ckpts.glob("*.ckpt"):
        if not path.name.startswith("step"):
            path.unlink()  # leave only the mid-epoch checkpoint of step 6
    assert [p.name for p in ckpts.glob("*.ckpt")] == ["step000006.ckpt"]
    assert inspect_checkpoint(ckpts / "step000006.ckpt")["global_step"] == 6
    resumed = bigtrain.resume(run_dir, ["trainer.max_steps=-1"])
    assert "continuing from" in capsys.readouterr().out
    _assert_same_run(uninterrupted, (resumed, run_dir))


def test_corrupt_newest_checkpoint_is_named_and_skipped(tmp_path, capsys):
    run_dir = tmp_path / "run"
    bigtrain.train([*SHORT, "trainer.max_epochs=2"], run_dir=run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 3])  # truncated
    os.utime(last)  # and the newest file
    capsys.readouterr()
    resumed = bigtrain.resume(run_dir, ["trainer.max_epochs=3"])
    out = capsys.readouterr().out
    assert "skipping checkpoint last.ckpt is corrupt or truncated" in out
    assert "continuing from" in out and "epoch001-step000010.ckpt" in out
    assert resumed["global_step"] == 15 and resumed["resumed"] == 1


FAULT_LAUNCH = Path(__file__).parent / "fault_launch.py"


def test_atomic_save_survives_sigkill_mid_write(tmp_path):
    """A real process saves twice and is SIGKILLed half-way through the second write."""
    target = tmp_path / "checkpoints" / "last.ckpt"
    script = (
        "import sys, torch; from bigtrain.training.checkpoint_files import save_atomic\n"
        "for step in (1, 2):\n"
        "    w = {'w': torch.full((50_000,), float(step))}\n"
        "    save_atomic({'state_dict': w, 'global_step': step, 'optimizer_states': [{}], 'loops': {'fit_loop': {}}}, sys.argv[1])\n"
    )
    out = subprocess.run(
        [sys.executable, str(FAULT_LAUNCH), "2", "-c", script, str(target)],
        capture_output=True,
        timeout=120,
    )
    assert out.returncode == -signal.SIGKILL, out.stderr
    (partial,) = target.parent.glob(f".*{PARTIAL_SUFFIX}")
    assert 0 < partial.stat().st_size < 200_000 * 0.75  # about half of the second file
    state = torch.load(target, weights_only=True)
    assert state["global_step"] == 1 and torch.all(state["state_dict"]["w"] == 1.0)
    assert check_digest(target)  # the first save's digest file still matches the first save
    reports: list[str] = []
    assert newest_intact(target.parent, trust=False, report=reports.append) == target
    assert not partial.exists() and "interrupted" in reports[0]


def test_loader_position_resumes_mid_epoch_and_rolls_over_at_the_end():
    x = torch.arange(40).float().unsqueeze(1)
    full = [
        b[0].flatten().tolist()
        for b in TensorLoader([x], 8, shuffle=True, seed=3, epoch=lambda: 2, drop_last=True)
    ]
    loader = TensorLoader([x], 8, shuffle=True, seed=3, epoch=lambda: 0, drop_last=True)
    loader.load_state_dict({"epoch": 2, "consumed": 3})
    it = iter(loader)  # the resume point is taken at the first batch, not at iter()
    assert [b[0].flatten().tolist() for b in it] == full[3:]
    assert loader.state_dict() == {"epoch": 0, "consumed": 5}  # no position callable: its own count
    loader.load_state_dict({"epoch": 2, "consumed": 5})  # a finished epoch: the next one from its start
    nxt = TensorLoader([x], 8, shuffle=True, seed=3, epoch=lambda: 3, drop_last=True)
    assert [b[0].flatten().tolist() for b in loader] == [b[0].flatten().tolist() for b in nxt]


# --------------------------------------------------------------------------- bad input, one line


def _cli_error(args: list[str], capsys) -> str:
    """Run the command's own entry point; it must exit 2 with one line on stderr."""
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bigtrain: error: "), err
    return err[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    bigtrain.train([*SHORT, "trainer.max_epochs=1"], run_dir=run_dir)
    return run_dir


def test_checkpoint_needing_unpickling_is_refused_unless_trusted(finished_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ckpt = torch.load(finished_run / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["hyper_parameters"] = argparse.Namespace(lr=0.1)  # what old scripts saved
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save(ckpt, unsafe)
    line = _cli_error([*SHORT, f"ckpt_path={unsafe}"], capsys)
    assert "unsafe.ckpt needs unpickling code to load (argparse.Namespace" in line
    assert "trust_checkpoint=true" in line
    assert bigtrain.compose([f"ckpt_path={unsafe}", "trust_checkpoint=true"]).trust_checkpoint
    from bigtrain.runs.validate import validate

    validate(bigtrain.compose([*SHORT, f"ckpt_path={unsafe}", "trust_checkpoint=true"]))  # accepted
    assert not (tmp_path / "outputs").exists()


def test_corrupt_checkpoint_as_ckpt_path(finished_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes((finished_run / "checkpoints" / "last.ckpt").read_bytes()[:5000])
    assert "bad.ckpt is corrupt or truncated" in _cli_error([f"ckpt_path={bad}"], capsys)
    empty = tmp_path / "empty.ckpt"
    empty.touch()
    assert "empty.ckpt is empty" in _cli_error([f"ckpt_path={empty}"], capsys)
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    assert "notes.ckpt is corrupt or truncated" in _cli_error([f"ckpt_path={text}"], capsys)


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("missing", "resume={d} does not exist: give the directory of an earlier run"),
        ("not_a_run", "resume={d} is not a run directory: it has no .hydra/config.yaml"),
        ("unsafe", "optim.lr cannot change on resume"),
        ("multirun", "continues one run: drop --multirun"),
        ("with_ckpt_path", "ckpt_path cannot change on resume"),
        ("configs_changed", "optim.lr was 0.5 when the run started and would now be 0.003"),
        ("all_corrupt", "no checkpoint in"),
    ],
)
def test_bad_resume(case, fragment, finished_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    args = [f"resume={run_dir}"]
    if case == "missing":
        run_dir = tmp_path / "nope"
        args = [f"resume={run_dir}"]
    elif case == "not_a_run":
        shutil.rmtree(run_dir / ".hydra")
    elif case == "unsafe":
        args.append("optim.lr=0.1")
    elif case == "multirun":
        args = ["--multirun", *args, "trainer.max_epochs=2,3"]
    elif case == "with_ckpt_path":
        args.append(f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}")
    elif case == "configs_changed":
        saved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
        saved.optim.lr = 0.5
        OmegaConf.save(saved, run_dir / ".hydra" / "config.yaml")
    elif case == "all_corrupt":
        for path in (run_dir / "checkpoints").glob("*.ckpt"):
            path.write_bytes(b"PK\x03\x04 truncated")
        # Fails in the run (the files are read once the run starts), still before any training.
        with pytest.raises(bigtrain.config.ConfigError, match=fragment):
            bigtrain.resume(run_dir)
        return
    assert fragment.format(d=run_dir) in _cli_error(args, capsys)


def test_output_dir_that_cannot_be_made_or_written(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    line = _cli_error([*SHORT, "hydra.run.dir=afile/run"], capsys)
    assert "hydra.run.dir=afile/run cannot be created" in line and "is a file, not a folder" in line
    # A read-only file system stops root too (permission bits would not).
    line = _cli_error([*SHORT, "hydra.run.dir=/proc/bigtrain-run"], capsys)
    assert "hydra.run.dir=/proc/bigtrain-run is not writable" in line
    line = _cli_error(["--multirun", *SHORT, "hydra.sweep.dir=afile/sweep", "optim.lr=1e-3,2e-3"], capsys)
    assert "hydra.sweep.dir=afile/sweep cannot be created" in line


def test_full_file_system_is_refused_before_training(tmp_path, capsys, monkeypatch):
    """A real 1 MiB tmpfs (needs mount rights; skipped where the test cannot mount)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        monkeypatch.chdir(tmp_path)
        line = _cli_error([*SHORT, f"hydra.run.dir={mnt}/run"], capsys)
        assert "is on a full file system" in line and "MiB free" in line
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_cli_resume_continues_in_the_same_directory(tmp_path):
    args = [
        *SHORT,
        "callbacks.checkpoint.every_n_train_steps=null",
        "trainer.max_epochs=1",
        "hydra.run.dir=run",
    ]
    first = bigtrain_cmd(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    again = bigtrain_cmd("resume=run", "trainer.max_epochs=2", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no new run directory
    results = read_results(tmp_path / "run")
    assert results["resumed"] == 1 and results["epochs"] == 2 and results["global_step"] == 10
    epochs = [row.split(",") for row in (tmp_path / "run" / "metrics.csv").read_text().splitlines()]
    header = epochs[0]
    val_epochs = {r[header.index("epoch")] for r in epochs[1:] if r[header.index("val/loss")]}
    assert val_epochs == {"0", "1"}  # metrics.csv of the same run, continued


def test_resume_accepts_its_own_expanded_command_line(finished_run):
    """Lightning's DDP launcher re-runs the expanded command (plus hydra.* overrides) per process."""
    from bigtrain.runs.rundir import resume_overrides

    merged, _ = resume_overrides(str(finished_run), ["trainer.max_epochs=3"])
    assert merged[-1] == f"resume={finished_run}" and "trainer.max_epochs=1" not in merged
    child = [*merged, f"hydra.run.dir={finished_run}", "hydra.output_subdir=null"]
    again, _ = resume_overrides(str(finished_run), child)
    assert [o for o in again if not o.startswith("hydra.")] == merged


def test_resume_and_ckpt_path_together_is_a_config_error(finished_run):
    from bigtrain.config import ConfigError
    from bigtrain.runs.validate import validate

    ckpt = finished_run / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match="both say where to start: drop ckpt_path"):
        validate(bigtrain.compose([f"resume={finished_run}", f"ckpt_path={ckpt}"]))
