"""A run directory received from someone else is data, never code (docs/reliability.md,
"Security"): its files cannot make bigtrain run code, trust a pickle, or write outside it, and a
new run never writes over an earlier one. Each attack is planted in a copy of a real finished
run; each test asserts that nothing ran (its marker file never appears), nothing was written
outside, and the command said one line and exited non-zero."""

from __future__ import annotations

import hashlib
import pathlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import bigtrain
from bigtrain.cli import main
from bigtrain.config import ConfigError
from bigtrain.training.checkpoint_files import file_sha256, write_digests
from conftest import FAST, bigtrain_cmd, read_results
from test_extending import NETS


class Payload:
    """Unpickling this touches `path`: the stand-in for any code a pickle can run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A real finished run (the default MLP on digits, one short epoch)."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    bigtrain.train(FAST, run_dir=run_dir, quiet=True)
    return run_dir


@pytest.fixture
def received(finished, tmp_path) -> Path:
    """A copy of the finished run, as someone else's run directory would arrive."""
    return Path(shutil.copytree(finished, tmp_path / "received", symlinks=True))


def files(folder: Path) -> dict[str, str]:
    """Every file under `folder` (links not followed) with the SHA-256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def plant_config(run: Path, **sections) -> None:
    config = OmegaConf.load(run / ".hydra" / "config.yaml")
    for key, value in sections.items():
        OmegaConf.update(config, key, value, merge=False, force_add=True)
    OmegaConf.save(config, run / ".hydra" / "config.yaml")


def plant_overrides(run: Path, *extra: str) -> None:
    path = run / ".hydra" / "overrides.yaml"
    saved = list(OmegaConf.load(path))
    OmegaConf.save(OmegaConf.create([*saved, *extra]), path)


def plant_pickle_checkpoint(run: Path, marker: Path) -> None:
    """Every checkpoint replaced by one last.ckpt whose unpickling runs code, with a matching
    digest beside it (a digest proves the bytes, not where they came from)."""
    ckpts = run / "checkpoints"
    shutil.rmtree(ckpts)
    ckpts.mkdir()
    last = ckpts / "last.ckpt"
    torch.save({"state_dict": {}, "global_step": 3, "payload": Payload(marker)}, last)
    write_digests(last, [file_sha256(last)])


def cli(argv: list[str], capsys) -> tuple[int, list[str]]:
    """The command's own entry point in this process: (exit code, stderr lines)."""
    capsys.readouterr()
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, [line for line in err.splitlines() if line.strip()]


def one_error(code: int, lines: list[str], *words: str) -> str:
    errors = [line for line in lines if line.startswith("bigtrain: error:")]
    assert code == 2 and len(errors) == 1, lines
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


# --------------------------------------------------------------------------- code from a run's config


def _file_writer(marker: Path) -> dict:
    return {"_target_": "builtins.open", "file": str(marker), "mode": "w"}


def _pickle_loader(marker: Path) -> dict:
    pickled = marker.parent / "weights.pt"
    torch.save({"payload": Payload(marker)}, pickled)
    return {"_target_": "torch.load", "f": str(pickled), "weights_only": False}


def _bigtrain_function(marker: Path) -> dict:
    # Inside bigtrain, but a function that writes: only bigtrain's classes are built freely.
    return {"_target_": "bigtrain.runs.rundir.write_text_atomic", "path": str(marker), "text": "x"}


def _nested(marker: Path) -> dict:
    # instantiate is recursive: a bigtrain class whose argument is someone else's call.
    return {"_target_": "bigtrain.models.mlp.MLP", "hidden": _file_writer(marker)}


ATTACKS = {
    "file_writer": _file_writer,
    "pickle": _pickle_loader,
    "function": _bigtrain_function,
    "nested": _nested,
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
@pytest.mark.parametrize("use", ["eval", "predict", "load"])
def test_a_target_in_the_saved_config_runs_nothing(received, tmp_path, capsys, attack, use):
    marker = tmp_path / "marker"
    plant_config(received, model=ATTACKS[attack](marker))
    before = files(received)
    if use == "load":
        with pytest.raises(ConfigError) as e:
            bigtrain.load(received)
        line = str(e.value)
        assert "\n" not in line and "trust_code=True" in line
    else:
        argv = [use, str(received)] + ([] if use == "eval" else ["rows.csv"])
        line = one_error(*cli(argv, capsys), "--trust-code")
    assert "model" in line and "._target_=" in line and "outside bigtrain" in line
    assert not marker.exists()
    assert files(received) == before


@pytest.mark.parametrize("section", ["data", "callbacks.extra"])
def test_data_and_callback_targets_are_refused_too(received, tmp_path, capsys, section):
    marker = tmp_path / "marker"
    target = _file_writer(marker)
    plant_config(received, **{section: [target] if section == "callbacks.extra" else target})
    line = one_error(*cli(["eval", str(received)], capsys), "--trust-code")
    assert f"{section}" in line and "builtins.open" in line
    assert not marker.exists()


def test_a_target_replayed_on_resume_runs_nothing(received, tmp_path, capsys):
    marker = tmp_path / "marker"
    plant_overrides(received, "+model._target_=builtins.open", f"+model.file={marker}", "+model.mode=w")
    before = files(received)
    one_error(*cli([f"resume={received}"], capsys), "outside bigtrain", "trust_code=true")
    assert not marker.exists() and files(received) == before


# --------------------------------------------------------------------------- trust flags


@pytest.mark.parametrize("where", ["overrides.yaml", "config.yaml"])
def test_a_trust_flag_written_into_the_run_is_not_obeyed(received, tmp_path, where):
    marker = tmp_path / "marker"
    plant_pickle_checkpoint(received, marker)
    if where == "overrides.yaml":
        plant_overrides(received, "trust_checkpoint=true")
    else:
        plant_config(received, trust_checkpoint=True)
    out = bigtrain_cmd(f"resume={received}", cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("bigtrain: error:")]
    assert len(errors) == 1 and "no checkpoint" in errors[0] and "Traceback" not in out.stderr
    assert "trust_checkpoint=true" in out.stdout  # the skipped file is named with the flag to type
    assert not marker.exists()


def test_a_trust_flag_in_a_config_file_is_refused(tmp_path, capsys):
    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True)
    (conf / "trusting.yaml").write_text("# @package _global_\ntrust_checkpoint: true\n")
    argv = [
        "--config-dir",
        str(tmp_path / "conf"),
        "+experiment=trusting",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    one_error(*cli(argv, capsys), "trust_checkpoint=true is set by a config file")
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- writes stay inside


def test_saved_hydra_settings_are_not_replayed(received, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere.log"
    plant_overrides(received, f"hydra.job_logging.handlers.file.filename={elsewhere}")
    before = files(received)
    one_error(*cli([f"resume={received}"], capsys), "hydra.job_logging", "not replayed")
    assert not elsewhere.exists() and files(received) == before
    with pytest.raises(ConfigError, match="not replayed"):
        bigtrain.resume(received)


def test_a_symlinked_evals_folder_is_refused(received, tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    (received / "evals").symlink_to(outside, target_is_directory=True)
    one_error(*cli(["eval", str(received)], capsys), "evals is a symbolic link")
    assert list(outside.iterdir()) == []


def test_a_symlinked_checkpoints_folder_is_refused(received, tmp_path, capsys):
    outside = tmp_path / "outside"
    shutil.move(received / "checkpoints", outside)
    (received / "checkpoints").symlink_to(outside, target_is_directory=True)
    before = files(outside)
    one_error(*cli([f"resume={received}", "trainer.max_epochs=2"], capsys), "checkpoints is a symbolic link")
    assert files(outside) == before
    one_error(*cli(["+debug=fast", f"hydra.run.dir={received}", "overwrite=true"], capsys), "symbolic link")
    assert files(outside) == before


def test_a_saved_config_dir_is_not_used_unless_typed(received, tmp_path, capsys):
    conf = tmp_path / "theirs"
    (conf / "model" / "mlp").mkdir(parents=True)
    # What Hydra records for `bigtrain --config-dir DIR`: a command-line config source.
    source = {"path": str(conf), "schema": "file", "provider": "command-line"}
    saved = OmegaConf.create({"hydra": {"runtime": {"config_sources": [source]}}})
    OmegaConf.save(saved, received / ".hydra" / "hydra.yaml")
    one_error(*cli([f"resume={received}"], capsys), f"--config-dir {conf}", "type it")
    one_error(*cli(["eval", str(received)], capsys), f"--config-dir {conf}")


# --------------------------------------------------------------------------- one run per directory


def test_a_second_run_into_a_finished_run_changes_nothing(received, tmp_path):
    before = files(received)
    out = bigtrain_cmd(*FAST, "optim.lr=0.1", f"hydra.run.dir={received}", cwd=tmp_path)
    errors = [line for line in out.stderr.splitlines() if line.startswith("bigtrain: error:")]
    assert out.returncode == 2 and len(errors) == 1, out.stderr[-2000:]
    assert (
        "already holds a run" in errors[0]
        and f"resume={received}" in errors[0]
        and "overwrite=true" in errors[0]
    )
    assert files(received) == before
    dry = bigtrain_cmd("dry_run=true", f"hydra.run.dir={received}", cwd=tmp_path)
    assert dry.returncode == 2 and "already holds a run" in dry.stderr
    assert files(received) == before


def test_overwrite_replaces_the_earlier_run(received, tmp_path):
    old = {p.name for p in (received / "checkpoints").iterdir()}
    (received / "notes.txt").write_text("mine")  # not the run's: kept
    out = bigtrain_cmd(*FAST, "optim.lr=0.01", "overwrite=true", f"hydra.run.dir={received}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "removed the earlier run's" in out.stdout
    assert "optim.lr=0.01" in (received / ".hydra" / "overrides.yaml").read_text()
    assert read_results(received)["status"] == "completed"
    new = {p.name for p in (received / "checkpoints").iterdir()}
    assert not any(name.endswith("-v1.ckpt") for name in new) and new  # no old and new side by side
    assert (received / "notes.txt").read_text() == "mine"
    assert old == new  # the same names, written again by the new run (not kept from the old one)


def test_two_runs_started_at_once_leave_one_runs_files(tmp_path):
    run_dir = tmp_path / "shared"
    env_cmd = [sys.executable, "-m", "bigtrain", *FAST, f"hydra.run.dir={run_dir}"]
    procs = {
        lr: subprocess.Popen(
            [*env_cmd, f"optim.lr={lr}"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for lr in ("0.002", "0.004")
    }
    outs = {lr: p.communicate(timeout=300) for lr, p in procs.items()}
    codes = {lr: p.returncode for lr, p in procs.items()}
    assert sorted(codes.values()) == [0, 2], {lr: err[-2000:] for lr, (_, err) in outs.items()}
    winner = next(lr for lr, c in codes.items() if c == 0)
    loser = next(lr for lr, c in codes.items() if c == 2)
    errors = [line for line in outs[loser][1].splitlines() if line.startswith("bigtrain: error:")]
    assert len(errors) == 1 and ("in use by PID" in errors[0] or "already holds a run" in errors[0]), errors
    saved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert saved.optim.lr == float(winner)  # the weights' config, not the refused command's
    assert f"optim.lr={winner}" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert read_results(run_dir)["status"] == "completed"


# --------------------------------------------------------------------------- a legitimate run of your own


def test_your_own_model_evaluates_and_resumes_with_the_flags_typed(tmp_path):
    (tmp_path / "own_nets_trust.py").write_text(NETS)  # test_extending.py's models
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "own.yaml").write_text("_target_: own_nets_trust.TinyNet\nhidden: 8\n")
    made = bigtrain_cmd("--config-dir", "conf", "model=own", *FAST, "hydra.run.dir=run", cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-3000:]
    refused = bigtrain_cmd("eval", "run", cwd=tmp_path)
    assert refused.returncode == 2 and "--trust-code" in refused.stderr and "Traceback" not in refused.stderr
    evaluated = bigtrain_cmd("eval", "run", "--trust-code", "--config-dir", "conf", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    test_acc = read_results(tmp_path / "run")["test"]["acc"]
    evals = sorted((tmp_path / "run" / "evals").glob("*.json"))
    assert len(evals) == 1 and abs(OmegaConf.load(evals[0]).test.acc - test_acc) < 1e-6
    no_flag = bigtrain_cmd("--config-dir", "conf", "resume=run", "trainer.max_epochs=2", cwd=tmp_path)
    assert no_flag.returncode == 2 and "trust_code=true" in no_flag.stderr
    time.sleep(1)  # a new second for the resumed run's files
    resumed = bigtrain_cmd(
        "--config-dir", "conf", "resume=run", "trainer.max_epochs=2", "trust_code=true", cwd=tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    results = read_results(tmp_path / "run")
    assert results["status"] == "completed" and results["epochs"] == 2 and results["resumed"] == 1
