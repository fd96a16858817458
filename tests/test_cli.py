"""The command line as users type it: real subprocesses, real exit codes, real files."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from conftest import FAST, bigtrain_cmd, read_results


def test_help_lists_every_group_and_option(tmp_path):
    out = bigtrain_cmd("--help", cwd=tmp_path)
    assert out.returncode == 0
    for line in (
        "data: audio_folder, breast_cancer, csv, digits, image_folder, stdlib_text, target, text, tokens",
        "model: hf, target",
        # common: every key of the family once, the base of its presets (selectable too)
        "model/gpt: 1.3b, 125m, 13b, 175b, 2.7b, 350m, 6.7b, 760m, common, tiny",
        "model/llama: 13b, 70b, 7b, common, tiny",
        "model/mlp: base, common, seed, small, tiny",
        "model/cnn: common, small, tiny",
        "model/vit: common, small, tiny",
        "optim: adam, adamw, muon, sgd",
        "sched: constant, cosine, exponential, linear, plateau, step, wsd",
        "tricks: default, ema, swa",
        "experiment: breast_cancer_mlp, digits_cnn, digits_mlp, gpt_125m, gpt_stdlib, llama_7b, seed, speech_commands_kws, spoken_digits, spoken_digits_ctc",
    ):
        assert line in out.stdout
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["optim.lrr=1"], "unknown key 'optim.lrr': did you mean optim.lr?"),
        (["model=mlp/huge"], "unknown option model=mlp/huge"),
        (
            ["+experiment=nope"],
            "choose one of breast_cancer_mlp, digits_cnn, digits_mlp, gpt_125m, gpt_stdlib",
        ),
        (["optim.lr=-3e-4"], "optim.lr=-0.0003 is out of range"),
        (["data.batch_size=0"], "data.batch_size=0 is out of range"),
        (["trainer.devices=0"], "trainer.devices=0 is out of range"),
        (["trainer.max_epochs=five"], "trainer.max_epochs=five must be an integer"),
        (["ckpt_path=missing.ckpt"], "ckpt_path=missing.ckpt does not exist"),
        (["x=[1"], "write overrides as key=value"),
        (["trainer.steps_per_call=8"], "unknown key 'trainer.steps_per_call'"),
        (["--multirun", "optim.lr=1e-3,-1"], "optim.lr=-1.0 is out of range"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, fragment):
    out = bigtrain_cmd(*args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("bigtrain: error: ")
    assert fragment in lines[0]
    assert "Traceback" not in out.stderr + out.stdout
    assert not (tmp_path / "outputs").exists()  # rejected before any run directory exists


def test_full_traceback_on_request(tmp_path):
    out = bigtrain_cmd("optim.lr=-1", cwd=tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert out.returncode != 0
    assert "Traceback" in out.stderr


def test_cli_run_writes_the_run_directory(tmp_path):
    out = bigtrain_cmd(*FAST, "hydra.run.dir=run", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "run"
    results = read_results(run)
    assert results["status"] == "completed"
    for name in (
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
        "checkpoints/last.ckpt",
        "metrics.csv",
        "plan.json",
        "bigtrain.log",
    ):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / results["best_checkpoint"]).is_file()
    assert "test" in out.stdout and "acc" in out.stdout  # the closing table


def test_default_run_directory_is_outputs_name_timestamp(tmp_path):
    out = bigtrain_cmd("+experiment=seed", *FAST, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "seed").iterdir()
    assert len(run.name) == len("2026-01-01_00-00-00")
    assert read_results(run)["experiment"] == "seed"


def test_multirun_grid_writes_one_result_per_job(tmp_path):
    out = bigtrain_cmd("--multirun", *FAST, "optim.lr=1e-3,3e-3", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sorted((tmp_path / "sweep").glob("*/results.json"))
    assert len(jobs) == 2
    lrs = set()
    for job in jobs:
        overrides = OmegaConf.load(job.parent / ".hydra" / "overrides.yaml")
        lrs |= {o for o in overrides if o.startswith("optim.lr=")}
        assert OmegaConf.load(job.parent / ".hydra" / "config.yaml").optim.lr in (1e-3, 3e-3)
    assert lrs == {"optim.lr=0.001", "optim.lr=0.003"}
    assert all(read_results(j.parent)["status"] == "completed" for j in jobs)
